"""TrainingConfig: one description of a run, by concern, with its flags, presets and live settings.

Each field declares its concern (the --help group), its flag's help text, the check a single
value must pass (flags.py), and whether a checkpoint keeps it. The command line (cli/entry.py) is built from these
declarations, so a flag, its help, its default and its check cannot drift apart, and a value set
another way later (a live setting) is checked exactly as the flag is. Process flags say how this
process shows or hosts the run (--headless, --in-process, --resume, ...): checkpoints neither keep
them nor give them back.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..notify.notice import WEBHOOK_FORMATS
from ..run.layout import RunLayout
from .flags import (TYPES, ConfigError, Flag, at_least, device_spec, flag, fraction, guard_actions_check, keep_count,
                    non_negative, one_of, option, positive, share, webhook_urls)

# Model presets. "base" is GPT-2-124M-shaped; "small" follows nanoGPT's CPU recipe
# (4 layers, 4 heads, 128 wide) and is the default so a laptop CPU sees the loss fall in minutes.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64, "seq_len": 64, "batch_size": 8},
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 128, "seq_len": 128, "batch_size": 8},
    "base": {"n_layer": 12, "n_head": 12, "n_embd": 768, "seq_len": 1024, "batch_size": 4},
}
SAMPLE_DATASET = "sample"
TOKENIZER_NAMES = ("byte",)  # what --tokenizer takes by name (tokenizer.NAMES builds them)
DEFAULT_DATASET = "cerebras/SlimPajama-627B"
# Fields that fix the shape of the saved weights: a resumed run must agree on all of them.
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "seq_len", "tokenizer")
RUN, DATA, MODEL, OPTIM, MONITOR = "run", "data", "model", "optimisation", "monitoring"
GROUPS = (RUN, DATA, MODEL, OPTIM, MONITOR)


@dataclass
class TrainingConfig:
    # ---- run: where and how this process runs it ----------------------------------------------------
    test: bool = flag(False, RUN, "quick check: 5 chunks on the bundled sample, tiny model, visualization every "
                                  "2 steps", saved=False)
    run_dir: str = flag(".", RUN, "directory for training_viz/ and checkpoints/", saved=False,
                        default_text="a new runs/<date>-<time>-<model>; with --resume latest, the newest run there")
    run_name: str = flag("", RUN, "name shown in the app and dashboards", default_text="run dir's name")
    resume: str | None = flag(None, RUN, "continue from a checkpoint", saved=False, metavar="PATH|latest",
                              default_text="")
    overwrite: bool = flag(False, RUN, "start a fresh run in a run dir that already holds one", saved=False)
    headless: bool = flag(False, RUN, "no app: a progress bar and summary lines (automatic when stdout is not a "
                                      "terminal)", saved=False)
    in_process: bool | None = flag(
        None, RUN, "with the app: train on a thread of the app's process, or (--no-in-process) in a child process "
                   "that shares no GIL with the screen", saved=False,
        default_text="a child on a GPU; this process on a CPU, where the screen's own process would take cores "
                     "from training: benchmarks/results/ui.md")
    on_hangup: str = flag("continue", RUN, "when the terminal goes away (SSH dropped): keep training headless, its "
                                           "output going to the run's log, or stop with a final checkpoint",
                          check=one_of("continue", "stop"), saved=False)
    device: str = flag("auto", RUN, "auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps", check=device_spec)
    compile: bool = flag(False, RUN, "torch.compile the model")
    seed: int = flag(1337, RUN, "random seed (runs are deterministic on CPU)")
    nproc_per_node: int = flag(1, RUN, "train on N processes of this machine (one per GPU; gloo on CPU), data "
                                       "parallel, started through torchrun", check=positive, metavar="N",
                               default_text="1, in this process")
    strategy: str = flag("ddp", RUN, "with several ranks: ddp keeps a whole model on each (DistributedDataParallel); "
                                     "fsdp shards parameters, gradients and optimizer state across them (FSDP2 "
                                     "fully_shard) and checkpoints with torch.distributed.checkpoint",
                         check=one_of("ddp", "fsdp"))
    peak_tflops: float | None = flag(None, RUN, "peak dense bf16 TFLOP/s of one GPU, for MFU", check=positive,
                                     metavar="T", default_text="from a table of known GPUs")
    # ---- data ---------------------------------------------------------------------------------------
    dataset: str = flag(DEFAULT_DATASET, DATA, "hub dataset with a text column, a local path, or 'sample'")
    data_files: str | None = flag(None, DATA, "local shards (*.jsonl.zst, .jsonl, .json.gz, .parquet, .txt)",
                                  metavar="GLOB", default_text="")
    val_data_files: str | None = flag(None, DATA, "local validation shards", metavar="GLOB", default_text="")
    tokenizer: str | None = flag(None, DATA, "byte (UTF-8 bytes and an end-of-text token), or the path of a "
                                             "tokenizer.json or a SentencePiece .model", metavar="NAME|PATH",
                                 default_text="byte")
    shuffle_buffer: int = flag(1 << 22, DATA, "tokens read ahead at a time and handed out as blocks in a random "
                                              "order, so a step samples many documents and places (as nanoGPT's "
                                              "random offsets do); 0 keeps the stream's order", check=non_negative,
                               metavar="TOKENS")
    epochs: int = flag(1, DATA, "passes over a finite dataset, 0 loops forever", check=non_negative)
    # ---- model --------------------------------------------------------------------------------------
    model: str = flag("small", MODEL, "preset size; flags below override it", check=one_of(*MODEL_PRESETS))
    n_layer: int = flag(4, MODEL, "transformer blocks", check=positive)
    n_head: int = flag(4, MODEL, "attention heads", check=positive)
    n_embd: int = flag(128, MODEL, "width of the residual stream", check=positive)
    seq_len: int = flag(128, MODEL, "context length in tokens", check=positive)
    dropout: float = flag(0.0, MODEL, "dropout probability", check=share)
    # ---- optimisation -------------------------------------------------------------------------------
    max_chunks: int | None = flag(None, OPTIM, "optimizer steps to train", check=positive,
                                  default_text="until stopped or data ends")
    tokens_per_chunk: int = flag(4096, OPTIM, "tokens per optimizer step", check=positive)
    batch_size: int = flag(8, OPTIM, "sequences per micro-batch; the rest is gradient accumulation", check=positive)
    lr: float = flag(1e-3, OPTIM, "peak learning rate", check=positive)
    min_lr: float = flag(1e-4, OPTIM, "final learning rate of the cosine decay", check=non_negative)
    warmup_steps: int = flag(100, OPTIM, "linear warmup steps", check=non_negative,
                             default_text="100, or a tenth of --max-chunks where that is fewer")
    lr_decay_steps: int | None = flag(None, OPTIM, "cosine decay length", check=positive, default_text="--max-chunks")
    weight_decay: float = flag(0.1, OPTIM, "AdamW decoupled weight decay", check=non_negative)
    beta1: float = flag(0.9, OPTIM, "AdamW beta1", check=share)
    beta2: float = flag(0.95, OPTIM, "AdamW beta2 (nanoGPT's small recipes use 0.99)", check=share)
    grad_clip: float = flag(1.0, OPTIM, "gradient norm clip, 0 disables", check=non_negative)
    max_bad_steps: int = flag(10, OPTIM, "stop after this many non-finite steps in a row", check=positive)
    lr_scale: float = flag(1.0, OPTIM, "multiplier on the learning-rate schedule; set live with `ctl RUN set "
                                       "lr_scale=0.5`, lowered by the guard's rollbacks", check=positive, metavar="X")
    # ---- the guard: a run that catches its own divergence (guard.py) ---------------------------------
    guard: str = flag("on", OPTIM, "watch each step for a non-finite loss or gradient, a loss spike and an "
                                   "exploding gradient norm, and act (--guard-actions)", check=one_of("on", "off"))
    guard_actions: str = flag("nonfinite=rollback,spike=rollback,grad=warn", OPTIM,
                              "what the guard does for each trouble: warn, pause (wait for a human) or rollback "
                              "(restore the last good weights and settings, lower the learning rate, read on "
                              "past the data)", check=guard_actions_check, metavar="KIND=ACTION,...")
    guard_window: int = flag(100, OPTIM, "steps of recent loss and gradient norm the guard compares a step with",
                             check=at_least(10), metavar="N")
    guard_spike: float = flag(6.0, OPTIM, "a loss this many robust deviations (1.4826 x MAD, at least 1% of the "
                                          "level) above its recent median is a spike", check=positive, metavar="Z")
    guard_grad: float = flag(10.0, OPTIM, "a gradient norm this many times its recent median is exploding",
                             check=positive, metavar="X")
    guard_lr_factor: float = flag(0.5, OPTIM, "a rollback multiplies the learning rate by this", check=fraction,
                                  metavar="F")
    guard_max_rollbacks: int = flag(3, OPTIM, "after this many rollbacks in a row the guard pauses instead",
                                    check=positive, metavar="N")
    # ---- monitoring (names from the seed) -----------------------------------------------------------
    viz_interval: int = flag(50, MONITOR, "dashboard every N steps", check=positive)
    viz_budget: float = flag(0.005, MONITOR, "when every core is busy training, periodic dashboards wait so that "
                                             "drawing takes at most this share of training time (0: every "
                                             "--viz-interval steps whatever it costs)", check=share, metavar="F")
    checkpoint_interval: int = flag(2000, MONITOR, "checkpoint every N steps", check=positive)
    keep_checkpoints: int = flag(3, MONITOR, "newest checkpoints kept", check=non_negative, metavar="K|all",
                                 parse=keep_count)
    keep_dashboards: int = flag(20, MONITOR, "training_step_*.png kept", check=non_negative, metavar="K|all",
                                parse=keep_count)
    eval_interval: int = flag(250, MONITOR, "validation every N steps", check=positive)
    eval_iters: int = flag(10, MONITOR, "validation batches per evaluation", check=positive)
    sample_interval: int = flag(5, MONITOR, "text sample every N steps; see --sample-budget", check=positive)
    sample_budget: float = flag(0.005, MONITOR, "largest share of training time text samples may cost; they are "
                                                "spaced out to stay under it, 0 disables", check=share)
    sample_tokens: int = flag(48, MONITOR, "length of a sample's continuation", check=positive)
    display_samples: int = flag(5, MONITOR, "samples in the dashboard table", check=positive)
    prompt: tuple = flag((), MONITOR, "a pinned prompt: the model continues it every --prompt-interval steps, "
                                      "so you watch its answer improve (repeatable)", metavar="TEXT", default_text="")
    prompts: str | None = flag(None, MONITOR, "a file of pinned prompts, one a line", metavar="FILE", default_text="")
    prompt_interval: int = flag(100, MONITOR, "steps between answers to the pinned prompts (their cost counts in "
                                              "--sample-budget, as the samples' does)", check=positive)
    prompt_tokens: int = flag(64, MONITOR, "longest answer to a prompt, in tokens", check=positive)
    tensorboard: bool = flag(False, MONITOR, "also write TensorBoard event files to <run-dir>/tensorboard as the run "
                                             "goes (a separate process follows metrics.jsonl; needs the tensorboard "
                                             "package: pip install 'neurogen-tui[tensorboard]')", saved=False)
    # ---- notifications (notify/): process flags, never kept in a checkpoint (a webhook's URL is a secret)
    notify: tuple = flag((), MONITOR, "post a JSON message to this webhook when something matters: the run finished "
                                      "or failed, the guard acted, a non-finite step, a stall, a checkpoint not "
                                      "written, the disk filling (Slack, Discord and ntfy bodies told from the URL; "
                                      "repeatable; shown masked)", metavar="URL", default_text="", saved=False,
                         check=webhook_urls)
    notify_format: str = flag("auto", MONITOR, "the webhook's body: auto (from the URL), slack, discord, ntfy or json "
                                               "(the notice as it is)", check=one_of(*WEBHOOK_FORMATS), saved=False)
    notify_cmd: tuple = flag((), MONITOR, "run this shell command with each notice as JSON on its standard input "
                                          "(repeatable)", metavar="CMD", default_text="", saved=False)
    notify_interval: float = flag(300.0, MONITOR, "at most one message of a kind per this many seconds; what is held "
                                                  "back is summed up after it", check=positive, metavar="S",
                                  saved=False)
    notify_best: bool = flag(False, MONITOR, "also notify each new best validation loss", saved=False)
    stall_after: float | None = flag(None, MONITOR, "notify when no step has come for this long (not while paused)",
                                     check=positive, metavar="S", saved=False,
                                     default_text="20 median steps, at least 300")
    disk_low_mb: float = flag(1024.0, MONITOR, "notify when the run directory's disk has less free space (MB)",
                              check=non_negative, metavar="MB", saved=False)
    ui_budget: float = flag(0.01, MONITOR, "the app's screen (charts, samples, header) uses at most this share of "
                                           "training time while that costs training: with the trainer in the "
                                           "app's process, or every core busy; keys never wait (0: full rate "
                                           "whatever it costs)", check=share, saved=False, metavar="F")

    # ---- derived values -------------------------------------------------------------------------------
    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def viz_dir(self) -> Path:
        return self.layout.viz

    @property
    def checkpoint_dir(self) -> Path:
        return self.layout.checkpoints

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

    def checkpoint_dict(self) -> dict:
        """What a checkpoint keeps: the run's recipe, not this process's way of showing it."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["flag"].saved}

    @classmethod
    def from_checkpoint(cls, data: dict) -> "TrainingConfig":
        """The recipe a checkpoint kept; fields it has that no longer exist, and process flags that
        older versions saved (headless, in_process, ...), are left out."""
        saved = {f.name for f in dataclasses.fields(cls) if f.metadata["flag"].saved}
        return cls(**{k: v for k, v in data.items() if k in saved})

    def apply_preset(self, name: str) -> None:
        check_field("model", name)
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
        self.sample_budget = self.viz_budget = self.ui_budget = 0.0
        self.eval_interval = 2
        self.eval_iters = 2
        self.warmup_steps = 2
        self.checkpoint_interval = 5


def fields() -> list[tuple[dataclasses.Field, Flag]]:
    """Every field with its flag, in the order --help lists them."""
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(TrainingConfig)]


def flag_type(name: str) -> Callable[[str], Any]:
    """An argparse type that reads and checks one field's value at once, for commands that take
    a field's flag without the whole config (watch and attach: --ui-budget)."""
    spec, kind = TrainingConfig.__dataclass_fields__[name].metadata["flag"], TrainingConfig.__dataclass_fields__[name].type

    def parse(text: str):
        try:
            value = (spec.parse or TYPES[kind.split(" | ")[0]])(text)
        except argparse.ArgumentTypeError:
            raise
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        problem = spec.check(name, value) if spec.check else None
        if problem:
            raise argparse.ArgumentTypeError(problem.removeprefix(option(name) + " "))
        return value

    return parse


# Settings a live run takes at a step boundary (ctl set, the settings dialog), each checked as its flag is.
LIVE_SETTINGS = ("lr", "lr_scale", "min_lr", "warmup_steps", "lr_decay_steps", "weight_decay", "grad_clip",
                 "eval_interval", "sample_interval", "viz_interval", "checkpoint_interval")


def live_changes(cfg: TrainingConfig, texts: dict) -> dict:
    """`name=value` pairs (values as text, as on a command line) to the values a live run takes,
    each read and checked exactly as its flag is, then together with the run's config (--min-lr
    must not exceed --lr); `eval=now` asks for an evaluation. Raises ConfigError with one line."""
    if not texts:
        raise ConfigError("nothing to set: give NAME=VALUE, NAME one of " + ", ".join(LIVE_SETTINGS + ("eval",)))
    out: dict[str, Any] = {}
    for name, text in texts.items():
        key = str(name).replace("-", "_")
        if key == "eval":
            if str(text) != "now":
                raise ConfigError(f"eval: the only value is 'now' (got {text!r})")
            out["eval"] = "now"
            continue
        if key not in LIVE_SETTINGS:
            raise ConfigError(f"{name!r} is not a live setting (one of: {', '.join(LIVE_SETTINGS + ('eval',))})")
        try:
            out[key] = flag_type(key)(str(text))
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{option(key)}: {exc}") from None
    check_min_lr(dataclasses.replace(cfg, **{k: v for k, v in out.items() if k != "eval"}))  # each value checked above
    return out


def check_min_lr(cfg: TrainingConfig) -> None:
    if cfg.min_lr > cfg.lr:
        raise ConfigError(f"--min-lr ({cfg.min_lr}) must not exceed --lr ({cfg.lr})")


def check_field(name: str, value) -> None:
    """One value checked as its flag is; raises ConfigError with the flag's one-line message."""
    spec = TrainingConfig.__dataclass_fields__[name].metadata["flag"]
    problem = spec.check(name, value) if spec.check is not None else None
    if problem:
        raise ConfigError(problem)


def apply_flags(given: dict, base: TrainingConfig | None = None) -> TrainingConfig:
    """Flags given on the command line (None: not given) over `base` (a resumed run's recipe) or
    the defaults: --test first, then --model's preset, then every other flag."""
    cfg = base or TrainingConfig()
    given = {k: v for k, v in given.items() if v is not None}
    if given.pop("test", None):
        cfg.apply_test_mode()
    if "model" in given:
        cfg.apply_preset(given.pop("model"))
    for key, value in given.items():
        if hasattr(cfg, key):
            setattr(cfg, key, tuple(value) if isinstance(value, list) else value)  # --prompt, repeated
    if base is None and "warmup_steps" not in given and cfg.max_chunks and not cfg.test:
        cfg.warmup_steps = min(cfg.warmup_steps, fitted_warmup(cfg.max_chunks))  # a short run reaches its --lr
    return cfg


def fitted_warmup(max_chunks: int) -> int:
    """The default warmup of a run of `max_chunks` steps: a tenth of it (nanoGPT warms up 2-10%), so
    a short run of a sweep trains most of its steps at and after the peak it was asked for."""
    return max(1, max_chunks // 10)


def warmup_note(cfg: TrainingConfig) -> str:
    """What to say once at the start of a run whose warmup outlasts it ('' where it fits)."""
    if not cfg.max_chunks or cfg.warmup_steps < cfg.max_chunks:
        return ""
    reached = cfg.lr * cfg.max_chunks / (cfg.warmup_steps + 1)  # the linear ramp at the last step (schedule.lr_at)
    return (f"--warmup-steps {cfg.warmup_steps} is not shorter than --max-chunks {cfg.max_chunks}: the learning "
            f"rate never reaches --lr {cfg.lr:g} (it ends at {reached:.3g}); leave --warmup-steps out to warm up "
            f"for a tenth of the run")
