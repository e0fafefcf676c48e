"""Which runtime ``auto`` runs, per detector and device: on CUDA, eager; on the CPU, the table below.

Each CPU entry is the fastest runtime measured by ``benchmarks/runtime_bench.py`` (batch 16, 2 threads) among
those that keep every P(fake) within 1e-3 of eager on real face crops; the measurement is in the README.
A detector not in the table, or a runtime that cannot run here (library missing, detector not expressible,
export check failed), runs eager.
"""

from __future__ import annotations

# Measured on 2 shared threads, batch 16, 64 real DFDC faces (README, "CPU runtimes"): ONNX Runtime 3.6-8.8x eager
# on FAClue, 3.2-6.3x on SFIConv, 1.4x on RALF, OpenVINO a little behind each time, max |dP| <= 1e-5. PEL: neither
# exporter has its median filter. MC-LCR: ONNX's DFT moves P(fake) by 1.5e-3 (the phase of bins whose imaginary
# part is 0), OpenVINO cannot convert its complex tensors. torch.compile keeps the scores but gains only 1.2x
# on those two, for 2-6 minutes of compilation on the first scan: eager, until a scan scores thousands of faces.
DEFAULT_CPU_RUNTIME: dict[str, str] = {
    "faclue": "onnx",
    "sficonv": "onnx",
    "pel": "eager",
    "mclcr": "eager",
    "ralf": "onnx",
}
DEFAULT_CUDA_RUNTIME = "eager"  # the exported runtimes here are CPU builds; CUDA kernels are eager's own


def default_runtime(detector: str, device: str) -> str:
    """The runtime ``auto`` picks for ``detector`` on ``device`` ("cpu" or "cuda")."""
    if device != "cpu":
        return DEFAULT_CUDA_RUNTIME
    return DEFAULT_CPU_RUNTIME.get(detector, "eager")
