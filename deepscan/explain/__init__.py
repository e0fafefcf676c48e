"""Why a detector calls a face forged: where (Grad-CAM), and in which frequencies (spectra, the method's views).

- :mod:`~deepscan.explain.cam`: the class-activation map of the fake logit, mapped back onto the frame;
- :mod:`~deepscan.explain.spectra`: the face's own spectra, and a reference of real faces;
- :mod:`~deepscan.explain.face`: one face explained, a method's views without a face, the frame at a time;
- :mod:`~deepscan.explain.recorded`: the most suspicious faces of an earlier scan, recovered from its report.

Explanations are data; their panels and figures are drawn by :mod:`deepscan.report.figures` (reports depend on
explain, never the reverse).
"""

from deepscan.explain.cam import CAM_METHODS, CAM_TITLES, CamResult, FakeLogitModel, compute_cam, heatmap_to_frame
from deepscan.explain.errors import ExplainError
from deepscan.explain.face import (
    FaceExplanation,
    MethodViews,
    crop_tensor,
    explain_face,
    frame_at,
    method_views,
    parse_timestamp,
)
from deepscan.explain.recorded import (
    REPORT_FOLDERS,
    check_report_paths,
    explain_recorded_faces,
    locate_media,
    recover_frames,
    report_weights,
    suspicious_faces,
    verify_media,
)
from deepscan.explain.spectra import (
    FaceSpectra,
    RadialSpectrum,
    ReferenceSpectrum,
    azimuthal_power_spectrum,
    face_spectra,
    reference_spectrum,
)

__all__ = [
    "CAM_METHODS",
    "CAM_TITLES",
    "REPORT_FOLDERS",
    "CamResult",
    "ExplainError",
    "FaceExplanation",
    "FaceSpectra",
    "FakeLogitModel",
    "MethodViews",
    "RadialSpectrum",
    "ReferenceSpectrum",
    "azimuthal_power_spectrum",
    "check_report_paths",
    "compute_cam",
    "crop_tensor",
    "explain_face",
    "explain_recorded_faces",
    "face_spectra",
    "frame_at",
    "heatmap_to_frame",
    "locate_media",
    "method_views",
    "parse_timestamp",
    "recover_frames",
    "reference_spectrum",
    "report_weights",
    "suspicious_faces",
    "verify_media",
]
