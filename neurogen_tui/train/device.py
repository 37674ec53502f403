"""The device a run trains on: which one, its precision, its name, and how a step's tokens split."""
from __future__ import annotations

import contextlib

import torch

from .validate import check_device


def accumulation(tokens_per_chunk: int, tokens_per_micro_batch: int, world_size: int) -> tuple[int, str]:
    """Micro-steps per rank so that one optimizer step still trains on about --tokens-per-chunk
    tokens across the job, and a note when the numbers do not divide exactly."""
    per_step = tokens_per_micro_batch * world_size
    accum = max(1, round(tokens_per_chunk / per_step))
    note = ""
    if accum * per_step != tokens_per_chunk:
        note = (f"--tokens-per-chunk {tokens_per_chunk} is not a multiple of batch x seq-len x ranks "
                f"({tokens_per_micro_batch} x {world_size} = {per_step}): each step trains on "
                f"{accum * per_step} tokens ({accum} micro-batch(es) per rank)")
    return accum, note


def pick_device(spec: str) -> torch.device:
    if spec != "auto":
        check_device(spec)
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def prepare_device(device: torch.device) -> torch.device:
    """TF32 matmuls on CUDA (bf16 autocast does the rest), and the peak memory counted from here."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    return device


def autocast(device: torch.device):
    """bf16 autocast where the GPU has it; full precision elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def device_name(device: torch.device) -> str:
    """The device's own name (the MFU table looks it up)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
