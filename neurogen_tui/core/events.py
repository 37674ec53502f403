"""Events the trainer publishes. Subscribers (app, files writer, headless console) never block it."""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


GPU_FIELDS = ("gpu_util", "gpu_mem_used_mb", "gpu_power_w", "gpu_temp_c", "gpu_mem_total_mb",
              "gpu_sm_clock_mhz")  # null where NVML cannot read one


@dataclass
class TrainingMetrics:
    """Real-time training metrics (the seed's fields, same names), one per optimizer step."""

    step: int
    loss: float
    accuracy: float  # top-1 next-token accuracy over the chunk, 0..1
    tokens_per_sec: float  # measured over this step's wall time
    gpu_memory_mb: float  # CUDA peak allocated; 0 without CUDA
    learning_rate: float
    timestamp: float
    grad_norm: float = 0.0
    val_loss: float | None = None  # set on evaluation steps
    tokens_seen: int = 0
    rss_mb: float = 0.0  # process resident memory
    step_time: float = 0.0
    skipped: bool = False  # a non-finite loss: no optimizer update was made
    mfu: float | None = None  # model FLOPs utilization, 0..1, where the device's peak is known
    cpu_util: float | None = None  # the training process's CPU since the last step, % of one core
    data_time: float | None = None  # seconds of the step spent reading batches (the data pipeline)
    # the GPU's last NVML readings (machine.GpuReadings); in a data-parallel job the slowest / hottest rank's
    gpu_util: float | None = None  # % of the sample period a kernel ran
    gpu_mem_used_mb: float | None = None  # memory used on the device (all processes), MiB
    gpu_power_w: float | None = None
    gpu_temp_c: float | None = None
    gpu_mem_total_mb: float | None = None  # the device's memory, MiB
    gpu_sm_clock_mhz: float | None = None  # the streaming multiprocessors' clock now (throttling shows here)

    def to_dict(self) -> dict:
        d = asdict(self)
        if all(d[k] is None for k in GPU_FIELDS):  # no readings at all (a CPU, or no NVML): left out
            for k in GPU_FIELDS:
                del d[k]
        for optional in ("val_loss", "mfu", "cpu_util", "data_time"):
            if d[optional] is None:
                del d[optional]
        return d


@dataclass
class TextSample:
    """Input text, the real continuation, and the model's own greedy continuation."""

    step: int
    input: str
    target: str
    output: str
    accuracy: float | None  # fraction of continuation tokens equal to the target's, 0..1; None for a prompt
    kind: str = "sample"  # "prompt": a person's (or a pinned) prompt and the model's answer; no target

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalResult:
    step: int
    val_loss: float
    val_accuracy: float


@dataclass
class RunStarted:
    device: str
    device_name: str
    n_params: int
    start_step: int
    total_steps: int | None
    resumed_from: str | None = None


@dataclass
class CheckpointSaved:
    step: int
    path: str


@dataclass
class CheckpointSkipped:
    """A checkpoint that was not written because the state looked diverged (the guard acted)."""

    step: int
    reason: str


@dataclass
class LogMessage:
    level: str  # "info" | "warning" | "error"
    text: str
    time: float | None = None  # when it happened, where that is not now (a viewer replaying the run's past)


@dataclass
class StateChanged:
    state: str  # a layout.RunState


@dataclass
class RunFinished:
    step: int
    reason: str  # a layout.EndReason
    tokens_seen: int = 0
    checkpoint: str | None = None


@dataclass
class RunFailed:
    step: int
    error: str
    traceback: str = ""


@dataclass
class SettingChanged:
    """Live settings changed at a step boundary (ctl set, the settings dialog, the guard)."""

    step: int
    changes: dict  # name -> [old, new]
    source: str = "ctl"  # who asked: ctl, app, guard
    ticket: int = 0  # the request's (live.Steering.request), so the one who asked hears of it
    refused: str = ""  # why nothing changed: the request, checked with the others of its boundary, failed


def changes_text(changes: dict) -> str:
    """A SettingChanged's changes in a few words: "lr 0.001 -> 0.0003, evaluation now"."""
    def num(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return ", ".join("evaluation now" if name == "eval" else
                     f"{name} {num(v[0])} -> {num(v[1])}" if isinstance(v, (list, tuple)) and len(v) == 2 else f"{name} {v}"
                     for name, v in changes.items())


@dataclass
class GuardFired:
    """The guard saw trouble after a step and did something about it."""

    step: int
    kind: str  # nonfinite | spike | grad
    detail: str  # one line: what it saw
    action: str  # warn | pause | rollback
    outcome: str = ""  # one line: what it did (rolled back to step N's weights, LR x0.5)


@dataclass
class RunNote:
    """Something for the run's timeline alone (events.jsonl): a hang-up, a viewer attached."""

    kind: str
    details: dict = field(default_factory=dict)


@dataclass
class Notified:
    """A notice was made (notify/notice.py's Notice as a dict: kind, title, text, level, step,
    held): the timeline records it, a watching app rings the terminal's bell and shows it."""

    notice: dict
    replayed: bool = False  # read back from the timeline of a run opened later: shown, not rung


Event = Any
Subscriber = Callable[[Event], None]


@dataclass
class EventBus:
    """Fan-out of trainer events. Subscribers run on the trainer's thread, so they must be quick:
    put the event on a queue, append a line, or set a flag. A subscriber that raises is logged and
    dropped rather than allowed to kill training."""

    subscribers: list[Subscriber] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def subscribe(self, fn: Subscriber) -> Subscriber:
        with self._lock:
            self.subscribers.append(fn)
        return fn

    def unsubscribe(self, fn: Subscriber) -> None:
        with self._lock:
            if fn in self.subscribers:
                self.subscribers.remove(fn)

    def publish(self, event: Event) -> None:
        for fn in list(self.subscribers):
            try:
                fn(event)
            except Exception as exc:
                log.exception("event subscriber %r failed; unsubscribing it", fn)
                self.unsubscribe(fn)
                name = getattr(fn, "name", type(fn).__name__)
                self.publish(LogMessage("error", f"{name} stopped after an error: {type(exc).__name__}: {exc}"))
