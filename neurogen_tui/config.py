"""TrainingConfig: the single source of truth for a run, its presets and its validation."""
from __future__ import annotations

import dataclasses
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A problem the user can fix by changing a flag; shown as one line, exit status 2."""


# Model presets. "base" is GPT-2-124M-shaped; "small" follows nanoGPT's CPU recipe
# (4 layers, 4 heads, 128 wide) and is the default so a laptop CPU sees the loss fall in minutes.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64, "seq_len": 64, "batch_size": 8},
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 128, "seq_len": 128, "batch_size": 8},
    "base": {"n_layer": 12, "n_head": 12, "n_embd": 768, "seq_len": 1024, "batch_size": 4},
}

SAMPLE_DATASET = "sample"
DEFAULT_DATASET = "cerebras/SlimPajama-627B"

# Fields that fix the shape of the saved weights: a resumed run must agree on all of them.
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "seq_len", "tokenizer")


@dataclass
class TrainingConfig:
    # run and output
    run_dir: str = "."
    run_name: str = ""
    resume: str | None = None
    headless: bool = False
    # the app's trainer on a thread of the app's own process (True) or in a child process (False);
    # None: a child when training on a GPU, this process when every CPU core trains (cli.py)
    in_process: bool | None = None
    on_hangup: str = "continue"  # SIGHUP (terminal gone): "continue" training headless, or "stop"
    test: bool = False
    # data
    dataset: str = DEFAULT_DATASET
    data_files: str | None = None
    val_data_files: str | None = None
    tokenizer: str | None = None  # None: byte-level
    epochs: int = 1  # passes over a finite dataset; 0 loops forever
    # model
    model: str = "small"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    seq_len: int = 128
    dropout: float = 0.0
    # optimisation
    max_chunks: int | None = None  # optimizer steps; None trains until stopped or data ends
    tokens_per_chunk: int = 4096
    batch_size: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    lr_decay_steps: int | None = None  # default: max_chunks
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_bad_steps: int = 10
    seed: int = 1337
    device: str = "auto"
    compile: bool = False
    nproc_per_node: int = 1  # >1: this many ranks through torchrun, data parallel
    strategy: str = "ddp"  # with several ranks: ddp (a full model per rank) or fsdp (FSDP2, sharded)
    peak_tflops: float | None = None  # per-device dense bf16 peak for MFU; None: from the GPU table
    # monitoring (names from the seed)
    viz_interval: int = 50
    viz_budget: float = 0.005  # when every core is busy, periodic dashboards draw at most this share of training time
    checkpoint_interval: int = 2000
    keep_checkpoints: int = 3  # 0 keeps every checkpoint
    keep_dashboards: int = 20  # 0 keeps every dashboard
    display_samples: int = 5
    sample_interval: int = 5
    sample_tokens: int = 48
    ui_budget: float = 0.01  # the app's screen uses at most this share of the time while it costs training
    sample_budget: float = 0.005  # samples are spaced out to cost at most this share of training time
    eval_interval: int = 250
    eval_iters: int = 10
    log_interval: int = 1
    extra: dict = field(default_factory=dict)

    # ---- derived values -------------------------------------------------
    @property
    def viz_dir(self) -> Path:
        return Path(self.run_dir) / "training_viz"

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.run_dir) / "checkpoints"

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def grad_accum_steps(self) -> int:
        return self.tokens_per_chunk // self.tokens_per_micro_batch

    @property
    def display_name(self) -> str:
        return self.run_name or Path(self.run_dir).resolve().name or "run"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def apply_preset(self, name: str) -> None:
        if name not in MODEL_PRESETS:
            raise ConfigError(f"--model must be one of {', '.join(MODEL_PRESETS)} (got {name!r})")
        self.model = name
        for key, value in MODEL_PRESETS[name].items():
            setattr(self, key, value)

    def apply_test_mode(self) -> None:
        """The seed's --test: 5 chunks on the bundled sample, visualization every 2 steps."""
        self.test = True
        self.apply_preset("tiny")
        self.dataset = SAMPLE_DATASET
        self.data_files = None
        self.max_chunks = 5
        self.tokens_per_chunk = 1024
        self.viz_interval = 2
        self.sample_interval = 1
        self.sample_budget = 0.0
        self.viz_budget = 0.0
        self.ui_budget = 0.0
        self.eval_interval = 2
        self.eval_iters = 2
        self.warmup_steps = 2
        self.checkpoint_interval = 5


def _positive(cfg: TrainingConfig, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be a positive number (got {value})")


def validate(cfg: TrainingConfig, *, check_paths: bool = True) -> TrainingConfig:
    """Check every user-settable value before any work starts; raise ConfigError with one line."""
    _positive(cfg, ("max_chunks", "tokens_per_chunk", "viz_interval", "checkpoint_interval",
                    "seq_len", "batch_size", "n_layer", "n_head", "n_embd", "lr",
                    "eval_interval", "eval_iters", "sample_interval", "sample_tokens",
                    "display_samples", "max_bad_steps", "log_interval", "lr_decay_steps"))
    _positive(cfg, ("nproc_per_node", "peak_tflops"))
    for name in ("sample_budget", "viz_budget", "ui_budget", "warmup_steps", "keep_checkpoints", "keep_dashboards", "epochs", "grad_clip",
                 "weight_decay", "min_lr"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative (got {getattr(cfg, name)})")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"--dropout must be in [0, 1) (got {cfg.dropout})")
    if cfg.min_lr > cfg.lr:
        raise ConfigError(f"--min-lr ({cfg.min_lr}) must not exceed --lr ({cfg.lr})")
    if cfg.n_embd % cfg.n_head:
        raise ConfigError(f"--n-embd ({cfg.n_embd}) must be divisible by --n-head ({cfg.n_head})")
    micro = cfg.tokens_per_micro_batch
    if cfg.tokens_per_chunk % micro:
        lower = max(micro, cfg.tokens_per_chunk // micro * micro)
        raise ConfigError(
            f"--tokens-per-chunk ({cfg.tokens_per_chunk}) must be a multiple of --batch-size x "
            f"--seq-len ({cfg.batch_size} x {cfg.seq_len} = {micro}); try {lower} or {lower + micro}")
    if cfg.strategy not in ("ddp", "fsdp"):
        raise ConfigError(f"--strategy must be ddp or fsdp (got {cfg.strategy!r})")
    if cfg.on_hangup not in ("continue", "stop"):
        raise ConfigError(f"--on-hangup must be continue or stop (got {cfg.on_hangup!r})")
    if cfg.device not in ("auto", "cpu", "mps") and not cfg.device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu, cuda[:N] or mps (got {cfg.device!r})")
    if check_paths:
        _check_paths(cfg)
    return cfg


def _check_paths(cfg: TrainingConfig) -> None:
    for flag, pattern in (("--data-files", cfg.data_files), ("--val-data-files", cfg.val_data_files)):
        if pattern and not expand_files(pattern):
            raise ConfigError(f"{flag}: no file matches {pattern!r}")
    if cfg.tokenizer and not Path(cfg.tokenizer).is_file():
        raise ConfigError(f"--tokenizer: file not found: {cfg.tokenizer}")
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir: {run_dir} exists and is not a directory")
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--run-dir: {run_dir} is not writable")


def expand_files(pattern: str) -> list[str]:
    """Comma-separated globs to a sorted, de-duplicated list of existing files."""
    found: list[str] = []
    for part in pattern.split(","):
        part = os.path.expanduser(part.strip())
        if part:
            found.extend(p for p in sorted(glob.glob(part, recursive=True)) if os.path.isfile(p))
    return list(dict.fromkeys(found))
