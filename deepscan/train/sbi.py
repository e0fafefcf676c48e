"""Self-blended images: pseudo-fakes made from real faces alone.

After Shiohara and Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022), sec. 3: a face is
blended into itself. One copy (the source) or the other (the target) is jittered in colour and frequency
content; the source is also slightly rescaled and shifted; the source is pasted onto the target through a
randomly deformed, blurred face mask scaled by a blend ratio from {0.25, 0.5, 0.75, 1, 1, 1}. The result shows
the generic traces of a face swap (blending boundary, colour and sharpness mismatch, slight misalignment) and
nothing identity-specific, which is why a detector trained on it generalises and why a user with only real
footage can train one.

The paper builds its mask from 68 or 81 dlib landmarks. Here the face detector gives 6 keypoints (eyes, nose
tip, mouth, ears), so the face region is modelled as an oval fitted to them: as wide as the ears (or about
twice the eye distance), from the eyebrows or the forehead (a random choice, as the paper switches between its
68 and 81 landmark hulls) down to the chin; its outline is then deformed by a smooth random radial jitter,
eroded and blurred by random amounts.

Part blends (``SBISpec.parts``, a deviation from the paper, off by default): a share of the pseudo-fakes is
blended over facial parts only, a random non-empty subset of {right eye, left eye, nose, mouth}, each an oval
round its keypoint sized from the eye distance, deformed, eroded and blurred like the face mask. They stand for
forgeries that replace a part of the face rather than the whole of it (manual composites, attribute and
expression edits), whose traces the whole-face oval of the paper does not teach: a boundary inside the face.

Labels and outputs: ``self_blend`` returns the target (the real counterpart), the blended fake and the blend
mask; the fake equals the target exactly wherever the mask is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from deepscan.train.recipe import SBISpec

# Below this weight a blended pixel rounds to the target's value anyway; zeroing it makes "outside the mask"
# exact, so that the fake differs from its real counterpart only inside the face region.
_MASK_FLOOR = 1.0 / 512.0


@dataclass(frozen=True)
class SelfBlend:
    real: np.ndarray  # (H, W, 3) uint8: the target, i.e. what the fake is outside the mask
    fake: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) float32 in [0, 1]: the blend weight of the source (blend ratio included)


def canonical_keypoints(size: int, face_share: float) -> np.ndarray:
    """Keypoints of an upright, frontal face centred in a ``size`` square whose box is ``face_share`` of it.

    Used when the detector found no face in a crop that is known to be one (``crop_faces: false``); the
    proportions are those BlazeFace gives for a frontal portrait (measured on Grace Hopper's).
    """
    face = size * face_share
    centre = size / 2.0
    offsets = np.array(
        [[-0.22, -0.27], [0.22, -0.27], [0.0, -0.09], [0.0, 0.16], [-0.46, -0.1], [0.46, -0.1]]
    )
    return centre + offsets * face


def _face_frame(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float]:
    """Eye centre, the face's right-pointing and down-pointing unit axes, eye distance, eye-mouth distance, ear
    distance."""
    right_eye, left_eye, _, mouth, right_ear, left_ear = keypoints
    eye_centre = (right_eye + left_eye) / 2.0
    across = left_eye - right_eye
    eye_distance = float(np.linalg.norm(across))
    if eye_distance < 1e-6:
        across, eye_distance = np.array([1.0, 0.0]), 1e-6
    x_axis = across / eye_distance
    y_axis = np.array([-x_axis[1], x_axis[0]])
    to_mouth = mouth - eye_centre
    if float(to_mouth @ y_axis) < 0:  # keep "down" towards the mouth whatever the image's handedness
        y_axis = -y_axis
    eye_mouth = max(float(np.linalg.norm(to_mouth)), 0.5 * eye_distance)
    ear_distance = float(np.linalg.norm(left_ear - right_ear))
    return eye_centre, x_axis, y_axis, eye_distance, eye_mouth, ear_distance


def face_outline(keypoints: np.ndarray, rng: np.random.Generator, jitter: float, vertices: int = 48) -> np.ndarray:
    """A randomly deformed oval round the face, ``(vertices, 2)`` points in image coordinates."""
    eye_centre, x_axis, y_axis, eye_distance, eye_mouth, ear_distance = _face_frame(keypoints)
    half_width = 1.0 * eye_distance
    if 1.4 * eye_distance <= ear_distance <= 3.5 * eye_distance:  # ears look plausible: the face spans them
        half_width = 0.5 * (half_width + 0.45 * ear_distance)
    half_width *= rng.uniform(0.9, 1.1)
    top = eye_mouth * (rng.uniform(0.35, 0.55) if rng.random() < 0.5 else rng.uniform(0.8, 1.05))
    bottom = eye_mouth * rng.uniform(1.4, 1.6)
    middle = eye_centre + y_axis * (bottom - top) / 2.0
    half_height = (bottom + top) / 2.0
    # A squarer oval than an ellipse (superellipse, exponent ~2.5): cheeks and jaw fill the corners more.
    return _deformed_oval(middle, x_axis, y_axis, half_width, half_height, 2.5, rng, jitter, vertices)


def _deformed_oval(
    centre: np.ndarray,
    x_axis: np.ndarray,
    y_axis: np.ndarray,
    half_width: float,
    half_height: float,
    squareness: float,
    rng: np.random.Generator,
    jitter: float,
    vertices: int,
) -> np.ndarray:
    """A superellipse round ``centre`` along the face's axes, its radius deformed by a smooth random jitter."""
    angles = np.linspace(0.0, 2.0 * math.pi, vertices, endpoint=False)
    # A smooth random radial deformation: a few low harmonics with random phases.
    deformation = np.zeros_like(angles)
    for harmonic in range(2, 6):
        deformation += rng.normal(0.0, 1.0 / harmonic) * np.cos(harmonic * angles + rng.uniform(0, 2 * math.pi))
    radius = 1.0 + jitter * deformation / max(np.abs(deformation).max(), 1e-6)
    exponent = 2.0 / squareness
    cos, sin = np.cos(angles), np.sin(angles)
    along_x = np.sign(cos) * np.abs(cos) ** exponent * half_width * radius
    along_y = np.sign(sin) * np.abs(sin) ** exponent * half_height * radius
    return centre + along_x[:, None] * x_axis + along_y[:, None] * y_axis


def face_mask(
    keypoints: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, jitter: float = 0.08
) -> np.ndarray:
    """Soft blend mask ``(H, W)`` in [0, 1]: deformed face outline, randomly eroded, then blurred."""
    outline = face_outline(keypoints, rng, jitter)
    _, _, _, eye_distance, eye_mouth, _ = _face_frame(keypoints)
    return _soft_mask([outline], shape, max(eye_distance, eye_mouth), rng)


FACE_PARTS = ("right_eye", "left_eye", "nose", "mouth")


def part_outlines(keypoints: np.ndarray, parts: tuple[str, ...], rng: np.random.Generator, jitter: float = 0.08) -> list[np.ndarray]:
    """Deformed ovals round the named facial parts (:data:`FACE_PARTS`), in image coordinates.

    Sizes are shares of the eye distance, about what a composite that pastes an eye (with its brow), a nose or a
    mouth would cover; each is scaled by a random 0.85-1.2.
    """
    eye_centre, x_axis, y_axis, eye_distance, eye_mouth, _ = _face_frame(keypoints)
    right_eye, left_eye, nose, mouth = keypoints[:4]
    # (centre, half width, half height) per part; the eyes reach up to the brows, the nose from between the eyes.
    regions = {
        "right_eye": (right_eye - y_axis * 0.08 * eye_mouth, 0.36 * eye_distance, 0.26 * eye_distance),
        "left_eye": (left_eye - y_axis * 0.08 * eye_mouth, 0.36 * eye_distance, 0.26 * eye_distance),
        "nose": ((eye_centre + nose) / 2.0 + y_axis * 0.1 * eye_mouth, 0.24 * eye_distance,
                 0.5 * float(np.linalg.norm(nose - eye_centre)) + 0.12 * eye_distance),
        "mouth": (mouth, 0.5 * eye_distance, 0.26 * eye_distance),
    }
    outlines = []
    for part in parts:
        centre, half_width, half_height = regions[part]
        size = rng.uniform(0.85, 1.2)
        outlines.append(_deformed_oval(centre, x_axis, y_axis, half_width * size, half_height * size, 2.0, rng, jitter, 32))
    return outlines


def part_mask(keypoints: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, jitter: float = 0.08) -> np.ndarray:
    """Soft blend mask ``(H, W)`` over a random non-empty subset of the facial parts, eroded and blurred."""
    chosen = rng.random(len(FACE_PARTS)) < 0.5
    if not chosen.any():
        chosen[rng.integers(len(FACE_PARTS))] = True
    parts = tuple(part for part, keep in zip(FACE_PARTS, chosen) if keep)
    _, _, _, eye_distance, _, _ = _face_frame(keypoints)
    # Parts are a third of the face's size: the edge's erosion and blur scale with them, not with the face.
    return _soft_mask(part_outlines(keypoints, parts, rng, jitter), shape, 0.5 * eye_distance, rng)


def _soft_mask(outlines: list[np.ndarray], shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Filled outlines, eroded and blurred by random shares of ``scale``, peak 1, tiny weights zeroed."""
    height, width = shape
    canvas = Image.new("L", (width, height), 0)
    for outline in outlines:
        ImageDraw.Draw(canvas).polygon([tuple(point) for point in outline], fill=255)
    # Erode by blurring and keeping only the fully covered core, then soften the edge: both amounts random,
    # so that the blending boundary is sometimes sharp and sometimes wide.
    first = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.02, 0.15) * scale))
    core = first.point(lambda value: 255 if value >= 250 else 0)
    if not np.asarray(core).any():
        core = canvas
    soft = core.filter(ImageFilter.GaussianBlur(rng.uniform(0.04, 0.25) * scale))
    mask = np.asarray(soft, dtype=np.float32) / 255.0
    peak = mask.max()
    if peak > 0:
        mask = mask / peak
    mask[mask < _MASK_FLOOR] = 0.0
    return mask


def _jitter_colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Colour transforms of the paper's source-target augmentation: RGB shift, hue/saturation, brightness/contrast."""
    values = np.asarray(image, dtype=np.float32)
    values = values + rng.uniform(-20, 20, size=3).astype(np.float32)
    image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    hsv = np.asarray(image.convert("HSV"), dtype=np.int16).copy()
    hsv[..., 0] = (hsv[..., 0] + rng.integers(-8, 9)) % 256
    image = Image.fromarray(hsv.clip(0, 255).astype(np.uint8), mode="HSV").convert("RGB")
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.8, 1.2))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.9, 1.1))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.9, 1.1))


def _jitter_frequency(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Frequency transforms of the paper's augmentation: down-and-up scaling (softer) or sharpening (crisper)."""
    if rng.random() < 0.5:
        width, height = image.size
        factor = rng.uniform(0.5, 0.9)
        small = image.resize((max(4, round(width * factor)), max(4, round(height * factor))), Image.Resampling.BILINEAR)
        return small.resize((width, height), Image.Resampling.BILINEAR)
    return ImageEnhance.Sharpness(image).enhance(rng.uniform(1.5, 3.0))


def source_target_augmentation(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    picture = Image.fromarray(image)
    if rng.random() < 0.8:
        picture = _jitter_colour(picture, rng)
    if rng.random() < 0.6:
        picture = _jitter_frequency(picture, rng)
    return np.asarray(picture.convert("RGB"))


def _misalign(image: np.ndarray, centre: np.ndarray, face_size: float, spec: SBISpec, rng: np.random.Generator) -> np.ndarray:
    """Rescale the source about the face centre (per axis) and shift it by a few per cent of the face size."""
    scale_x, scale_y = rng.uniform(*spec.scale_range, size=2)
    shift = rng.uniform(-spec.max_shift, spec.max_shift, size=2) * face_size
    # Output point p takes the source at centre + (p - centre - shift) / scale.
    a, e = 1.0 / scale_x, 1.0 / scale_y
    c = centre[0] - (centre[0] + shift[0]) * a
    f = centre[1] - (centre[1] + shift[1]) * e
    picture = Image.fromarray(image).transform(
        (image.shape[1], image.shape[0]), Image.Transform.AFFINE, (a, 0.0, c, 0.0, e, f), resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(picture)


def self_blend(image: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator, spec: SBISpec | None = None) -> SelfBlend:
    """Blend a jittered copy of the face in ``image`` (H, W, 3 uint8) into itself; see the module docstring."""
    spec = spec or SBISpec()
    source, target = image, image
    if rng.random() < 0.5:
        source = source_target_augmentation(image, rng)
    else:
        target = source_target_augmentation(image, rng)
    eye_centre, _, y_axis, eye_distance, eye_mouth, _ = _face_frame(keypoints)
    face_centre = eye_centre + y_axis * 0.5 * eye_mouth
    source = _misalign(source, face_centre, 2.0 * max(eye_distance, eye_mouth), spec, rng)
    # Only a spec with part blends draws the choice, so that whole-face runs keep their random stream.
    if spec.parts > 0 and rng.random() < spec.parts:
        mask = part_mask(keypoints, image.shape[:2], rng, spec.mask_jitter)
    else:
        mask = face_mask(keypoints, image.shape[:2], rng, spec.mask_jitter)
    mask = mask * np.float32(spec.blend_ratios[rng.integers(len(spec.blend_ratios))])
    mask[mask < _MASK_FLOOR] = 0.0
    weight = mask[:, :, None]
    blended = weight * source.astype(np.float32) + (1.0 - weight) * target.astype(np.float32)
    fake = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return SelfBlend(real=np.ascontiguousarray(target), fake=fake, mask=mask)
