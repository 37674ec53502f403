"""The machine under the run, as plain numbers: cores, this process's memory and CPU, whether every
core is busy (the one machine-load probe the monitoring allowances share), and the GPU's readings."""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Callable

from .events import GPU_FIELDS


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def rss_mb() -> float:
    """Current resident memory of this process, in MiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class ProcessCpu:
    """This process's CPU use between two calls, in percent of one core (200 on two busy cores),
    all its threads counted (time.process_time); None for the first call."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def __call__(self) -> float | None:
        now = (time.perf_counter(), time.process_time())
        last, self._last = self._last, now
        if last is None or now[0] <= last[0]:
            return None
        return 100.0 * (now[1] - last[1]) / (now[0] - last[0])


class MachineLoad:
    """How many cores the whole machine kept busy, from /proc/stat's first line between two looks
    (the 1-minute load average where /proc/stat cannot be read; it lags a run's start by a minute).

    `saturated()` is what the allowances ask: true from the first look (at most one a LOOK_EVERY)
    that finds no spare core, within half a core, until CALM_LOOKS looks in a row find one (the
    load flickers between a trainer's steps)."""

    MIN_WINDOW = 0.2  # seconds: a shorter window says little; the previous figure stands
    LOOK_EVERY = 1.0
    CALM_LOOKS = 3

    def __init__(self, clock: Callable[[], float] = time.monotonic, cores: Callable[[], int] | None = None) -> None:
        self._clock, self._cores_fn = clock, cores
        self._mark = self._read()
        self._last = 0.0
        self._look_at = float("-inf")
        self._calm = 0
        self.busy = False

    def _cores(self) -> int:
        return self._cores_fn() if self._cores_fn is not None else cores()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as fh:
                ticks = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return time.monotonic(), sum(ticks[:8]) - idle, sum(ticks[:8])  # guest time is inside user

    def busy_cores(self) -> float:
        now = self._read()
        if now is None or self._mark is None:
            return os.getloadavg()[0]
        if now[0] - self._mark[0] >= self.MIN_WINDOW and now[2] > self._mark[2]:
            self._last = self._cores() * (now[1] - self._mark[1]) / (now[2] - self._mark[2])
            self._mark = now
        return self._last

    def mark(self) -> None:
        """Start the next window here (after a dashboard, so its own CPU is not counted)."""
        self._mark = self._read()

    def saturated(self) -> bool:
        now = self._clock()
        if now - self._look_at >= self.LOOK_EVERY:
            self._look_at = now
            if self.busy_cores() >= self._cores() - 0.5:
                self.busy, self._calm = True, 0
            else:
                self._calm += 1
                self.busy = self.busy and self._calm < self.CALM_LOOKS
        return self.busy


# ---- the GPU, through NVML ------------------------------------------------------------------------------
GPU_SAMPLE_S = 2.0  # nvitop's default refresh


class GpuReadings:
    """Utilisation, memory used and total, power draw, temperature and SM clock of one GPU, read through NVML (`nvidia-ml-py`, imported as pynvml) every GPU_SAMPLE_S on a thread
    of its own, never on the training thread. `latest()` is what the last sample found: a value
    NVML could not read is None. Without NVML, or for a GPU it cannot open, `note` says so once
    and every reading is None."""

    def __init__(self, index: int, nvml=None, interval: float = GPU_SAMPLE_S) -> None:
        self.note = ""
        self._values: dict[str, float | None] = dict.fromkeys(GPU_FIELDS)
        self._stop = threading.Event()
        self._nvml, self._handle = None, None
        try:
            if nvml is None:
                import pynvml as nvml  # nvidia-ml-py: optional (the `gpu` extra), present on most GPU images
            nvml.nvmlInit()
            self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = nvml
        except Exception as exc:  # no package, no driver library, a GPU NVML cannot open
            self.note = (f"GPU readings (utilisation, power, temperature) are not recorded: NVML {type(exc).__name__}"
                         f"{': ' + str(exc)[:80] if str(exc) else ''} (pip install nvidia-ml-py)")
            return
        self.sample()
        self._thread = threading.Thread(target=self._run, args=(interval,), name="gpu-readings", daemon=True)
        self._thread.start()

    @classmethod
    def for_device(cls, device) -> "GpuReadings | None":
        """Readings for a torch CUDA device; None for any other device (nothing to read)."""
        if getattr(device, "type", "") != "cuda":
            return None
        import torch

        return cls(device.index if device.index is not None else torch.cuda.current_device())

    def _read(self, name: str, fn: Callable[[], float]) -> None:
        try:
            self._values[name] = float(fn())
        except Exception:
            self._values[name] = None

    def sample(self) -> None:
        nv, h = self._nvml, self._handle
        if nv is None:
            return
        self._read("gpu_util", lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu)
        self._read("gpu_mem_used_mb", lambda: nv.nvmlDeviceGetMemoryInfo(h).used / 2**20)
        self._read("gpu_power_w", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)
        self._read("gpu_temp_c", lambda: nv.nvmlDeviceGetTemperature(h, getattr(nv, "NVML_TEMPERATURE_GPU", 0)))
        self._read("gpu_mem_total_mb", lambda: nv.nvmlDeviceGetMemoryInfo(h).total / 2**20)
        self._read("gpu_sm_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, getattr(nv, "NVML_CLOCK_SM", 1)))

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.sample()

    def latest(self) -> dict[str, float | None]:
        return dict(self._values)

    def close(self) -> None:
        self._stop.set()
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
