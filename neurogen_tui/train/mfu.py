"""Model FLOPs utilization: the model FLOPs a step achieves over the accelerators' peak.

FLOPs per token follow the PaLM paper's appendix B: 6N for the matrix multiplies of the forward
and backward passes over N parameters, plus 12·L·H·Q·T for attention (L layers, H heads of width
Q, context T). Peaks are dense bf16 tensor-core figures from the vendors' data sheets (no 2:4
sparsity). An unknown device gets no MFU rather than an A100's peak: a wrong denominator is worse
than a missing number (a long-standing complaint about nanoGPT's estimate_mfu).
"""
from __future__ import annotations

import re

# (pattern matched against torch.cuda.get_device_name, dense bf16 TFLOP/s per device).
# Order matters: the first match wins, so specific names (H100 PCIe, A100, L40S) come before the
# names they contain (H100, A10, L40).
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bB200\b", 2250.0),
    (r"\bGH200\b", 989.4),
    (r"\bH200 NVL\b", 835.0),
    (r"\bH200\b", 989.4),
    (r"\bH100 NVL\b", 835.0),
    (r"\bH100 PCIe\b", 756.0),
    (r"\bH100\b", 989.4),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    (r"\bH800\b", 989.4),
    (r"\bA100\b", 312.0),
    (r"\bA800\b", 312.0),
    (r"\bL40S\b", 362.05),
    (r"\bL40\b", 181.05),
    (r"\bA40\b", 149.7),
    (r"\bA30\b", 165.0),
    (r"\bA10\b", 125.0),  # not the A10G, whose peak NVIDIA does not publish
    (r"\bL4\b", 121.0),
    (r"\bRTX A6000\b", 154.8),
    (r"\bRTX 4090\b", 165.2),  # with FP32 accumulate, as PyTorch uses
    (r"\bRTX 3090\b", 71.0),
    (r"\bMI300X\b", 1307.4),
    (r"\bMI250X\b", 383.0),
)


def flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6N + 12·L·H·Q·T (PaLM, appendix B)."""
    return 6.0 * n_params + 12.0 * n_layer * n_head * head_dim * seq_len


def peak_tflops(device_name: str) -> float | None:
    """The device's dense bf16 peak in TFLOP/s, or None when it is not in the table."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return tflops
    return None


def mfu(tokens_per_sec: float, flops_per_tok: float, peak_tflops_per_device: float, devices: int = 1) -> float:
    """Achieved model FLOP/s over the summed peak of `devices` devices, 0..1 (tokens_per_sec is the
    whole job's rate, summed over ranks)."""
    return tokens_per_sec * flops_per_tok / (peak_tflops_per_device * 1e12 * devices)


class MfuMeter:
    """MFU for one run: resolves the peak once (--peak-tflops, else the table), then turns each
    step's job-wide tokens/s into a fraction. `note` says why there is no MFU when there is none."""

    def __init__(self, device_type: str, device_name: str, override_tflops: float | None,
                 fpt: float, devices: int = 1):
        self.flops_per_token = fpt
        self.devices = devices
        self.note = ""
        self.peak = override_tflops or (peak_tflops(device_name) if device_type == "cuda" else None)
        if self.peak is None and device_type == "cuda":
            self.note = (f"MFU: peak bf16 FLOP/s of {device_name!r} is not known; "
                         f"pass --peak-tflops N (dense bf16 TFLOP/s per GPU) to see MFU")

    def __call__(self, tokens_per_sec: float) -> float | None:
        if self.peak is None:
            return None
        return mfu(tokens_per_sec, self.flops_per_token, self.peak, self.devices)
