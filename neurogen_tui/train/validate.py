"""The whole config checked before any work starts: values, their combinations, devices, paths."""
from __future__ import annotations

import glob
import importlib.util
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from .config import SAMPLE_DATASET, TOKENIZER_NAMES, TrainingConfig, check_field, check_min_lr, fields
from .flags import ConfigError


def validate(cfg: TrainingConfig, *, check_paths: bool = True) -> TrainingConfig:
    """Check every user-settable value before any work starts; raise ConfigError with one line."""
    for f, _ in fields():
        check_field(f.name, getattr(cfg, f.name))
    check_min_lr(cfg)
    if cfg.n_embd % cfg.n_head:
        raise ConfigError(f"--n-embd ({cfg.n_embd}) must be divisible by --n-head ({cfg.n_head})")
    micro = cfg.tokens_per_micro_batch
    if cfg.tokens_per_chunk % micro:
        lower = max(micro, cfg.tokens_per_chunk // micro * micro)
        raise ConfigError(
            f"--tokens-per-chunk ({cfg.tokens_per_chunk}) must be a multiple of --batch-size x "
            f"--seq-len ({cfg.batch_size} x {cfg.seq_len} = {micro}); try {lower} or {lower + micro}")
    if cfg.tensorboard and (missing := tensorboard_missing()):
        raise ConfigError(f"--tensorboard: {missing}")
    if check_paths:
        _check_paths(cfg)
    return cfg


def tensorboard_missing() -> str:
    """Why TensorBoard's writer cannot be had here ('' where it can): --tensorboard and export ask."""
    if importlib.util.find_spec("tensorboard") is None:
        return "the tensorboard package is not installed: pip install 'neurogen-tui[tensorboard]' (or tensorboard)"
    return ""


def check_device(spec: str) -> None:
    """--device names something this machine has; raises ConfigError with one line. The flags'
    check before any file is written, and the trainer's choice of device, both ask here."""
    if spec in ("auto", "cpu"):
        return
    import torch

    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine (try --device auto or cpu)")
        index = spec.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ConfigError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif spec == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: MPS is not available on this machine (try --device auto or cpu)")


def _check_paths(cfg: TrainingConfig) -> None:
    check_device(cfg.device)
    if cfg.prompts:
        try:
            Path(cfg.prompts).read_bytes()  # prompts.pinned_prompts reads it when the run starts
        except OSError as exc:
            raise ConfigError(f"--prompts: cannot read {cfg.prompts}: {exc.strerror or exc} "
                              "(a resumed run keeps its prompts file: --prompts '' resumes without it)") from None
    for flag_name, pattern in (("--data-files", cfg.data_files), ("--val-data-files", cfg.val_data_files)):
        if pattern and not expand_files(pattern):
            raise ConfigError(f"{flag_name}: no file matches {pattern!r}")
    if cfg.tokenizer and cfg.tokenizer not in TOKENIZER_NAMES and not Path(cfg.tokenizer).is_file():
        raise ConfigError(f"--tokenizer: file not found: {cfg.tokenizer} (nor a name: {', '.join(TOKENIZER_NAMES)})")
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir: {run_dir} exists and is not a directory")
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--run-dir: {run_dir} is not writable")
    if streams_from_hub(cfg) and (why := hub_unreachable()):
        raise ConfigError(f"cannot reach the Hugging Face hub to stream {cfg.dataset} ({why}); train offline on "
                          f"the bundled sample with --dataset sample, or on local files with --data-files 'DIR/*.jsonl.zst'")


def streams_from_hub(cfg: TrainingConfig) -> bool:
    """The training data comes from the hub (not --data-files, the sample or a local path)."""
    return not cfg.data_files and cfg.dataset != SAMPLE_DATASET and not Path(cfg.dataset).exists()


def hub_unreachable(timeout: float = 3.0) -> str:
    """Why the hub cannot be reached from here, in a few words ('' where it can): offline mode, or
    one connection to its host that fails within `timeout` seconds, instead of `datasets`
    retrying for most of a minute before it says so."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name}={os.environ[name]}"
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except TimeoutError:
        return f"{host}:{port}: no answer within {timeout:g}s"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or type(exc).__name__}"
    return ""


def expand_files(pattern: str) -> list[str]:
    """Comma-separated globs to a sorted, de-duplicated list of existing files."""
    found: list[str] = []
    for part in pattern.split(","):
        part = os.path.expanduser(part.strip())
        if part:
            found.extend(p for p in sorted(glob.glob(part, recursive=True)) if os.path.isfile(p))
    return list(dict.fromkeys(found))
