"""Detector weights shipped with deepscan (safetensors + model cards + SHA256SUMS)."""
