"""The machine under the run (#19): the GPU through NVML (a fake NVML here; the real one in
tests/test_gpu.py on a GPU), and the training process's CPU."""
import json
import sys
import time
from types import SimpleNamespace

import pytest

from neurogen_tui.core.events import TrainingMetrics
from neurogen_tui.core.machine import GpuReadings, ProcessCpu
from neurogen_tui.run.metricsfile import read_metrics
from neurogen_tui.run.recorder import MetricsRecorder
from neurogen_tui.tui.state import RunView


class FakeNvml:
    """pynvml's calls, as nvidia-ml-py names them; `broken` fields raise as NVML does for a
    reading a GPU does not support (NVMLError_NotSupported)."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, broken=()):
        self.broken, self.calls, self.shut = set(broken), 0, False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, index):
        if index > 0:
            raise RuntimeError("Invalid Argument")
        return "h0"

    def _value(self, name, value):
        self.calls += 1
        if name in self.broken:
            raise RuntimeError("Not Supported")
        return value

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=self._value("util", 97))

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self._value("mem", 40 * 2**30), total=80 * 2**30)

    def nvmlDeviceGetPowerUsage(self, h):
        return self._value("power", 512_000)  # milliwatts

    def nvmlDeviceGetTemperature(self, h, sensor):
        return self._value("temp", 61)

    def nvmlDeviceGetClockInfo(self, h, clock):
        return self._value("clock", 1980)


def metrics(step, **gpu):
    return TrainingMetrics(step=step, loss=2.0, accuracy=0.5, tokens_per_sec=1e5, gpu_memory_mb=1000.0,
                           learning_rate=1e-3, timestamp=1.7e9 + step, tokens_seen=step * 1024, step_time=0.1, **gpu)


def test_readings_come_from_nvml_off_the_training_thread_with_unreadable_ones_null():
    nvml = FakeNvml(broken={"power"})
    gpus = GpuReadings(0, nvml=nvml, interval=0.05)
    try:
        assert gpus.note == ""
        assert gpus.latest() == {"gpu_util": 97.0, "gpu_mem_used_mb": 40 * 1024.0, "gpu_power_w": None, "gpu_temp_c": 61.0,
                                 "gpu_mem_total_mb": 80 * 1024.0, "gpu_sm_clock_mhz": 1980.0}
        before = nvml.calls
        time.sleep(0.3)
        assert nvml.calls > before  # sampled again by its own thread, nobody asking
    finally:
        gpus.close()
    assert nvml.shut


def test_without_nvml_or_for_a_gpu_it_cannot_open_every_reading_is_null_and_it_says_so_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` fails as where it is not installed
    missing = GpuReadings(0)
    assert "pip install nvidia-ml-py" in missing.note and set(missing.latest().values()) == {None}
    other = GpuReadings(3, nvml=FakeNvml())
    assert "Invalid Argument" in other.note and set(other.latest().values()) == {None}
    missing.close()
    other.close()
    assert GpuReadings.for_device(SimpleNamespace(type="cpu")) is None  # nothing to read on a CPU


def test_rows_hold_the_readings_null_where_unknown_and_cpu_rows_none(tmp_path):
    rec = MetricsRecorder(tmp_path)
    rec(metrics(1))  # a CPU run: no GPU fields at all
    rec(metrics(2, gpu_util=97.0, gpu_mem_used_mb=40960.0, gpu_power_w=None, gpu_temp_c=61.0))
    rec.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "gpu_util" not in rows[0]
    assert rows[1]["gpu_util"] == 97.0 and rows[1]["gpu_power_w"] is None and rows[1]["gpu_temp_c"] == 61.0
    table = read_metrics(tmp_path)
    assert table.columns["gpu_temp_c"][1] == 61.0 and table.columns["gpu_power_w"][1] != table.columns["gpu_power_w"][1]


def test_the_header_shows_the_gpu_where_it_was_read():
    from conftest import header_text

    gpu, cpu = RunView("gpu-run"), RunView("cpu-run")
    gpu.apply_all([metrics(1, gpu_util=97.0, gpu_mem_used_mb=40960.0, gpu_power_w=512.0, gpu_temp_c=61.0,
                           gpu_mem_total_mb=81920.0, gpu_sm_clock_mhz=1980.0)])
    cpu.apply_all([metrics(1)])
    assert gpu.header().gpu == "97% 512W 61°C" and cpu.header().gpu == ""
    assert "GPU 97% 512W 61°C" in header_text(gpu.header(), size=(80, 4))
    assert "40.0/80.0G" not in header_text(gpu.header(), size=(80, 4))  # one line at 80 columns ...
    assert "GPU 97% 512W 61°C 40.0/80.0G 1980MHz" in header_text(gpu.header(), size=(160, 4))  # ... more when wide
    assert "GPU" not in header_text(cpu.header(), size=(80, 4)).replace("GPU peak", "")


def test_process_cpu_counts_every_thread_in_percent_of_one_core():
    """Against the process's own CPU clock over the same wall time, so a loaded machine (this
    process given less than a core) reads the same as an idle one."""
    cpu = ProcessCpu()
    assert cpu() is None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.process_time() - cpu0 < 0.2:  # one busy thread: 0.2 s of CPU, however long that takes
        pass
    busy = cpu()
    expected = (time.process_time() - cpu0) / (time.perf_counter() - wall0) * 100
    assert abs(busy - expected) < 15 and busy > 5, (busy, expected)
    time.sleep(0.2)
    assert cpu() < 30


@pytest.mark.parametrize("rank_values, expect", [
    ([(97.0, 61.0), (40.0, 75.0)], (40.0, 75.0)),  # the slowest GPU's utilisation, the hottest's temperature
    ([(None, None), (50.0, 70.0)], (50.0, 70.0)),
])
def test_a_data_parallel_job_reports_the_slowest_and_hottest_gpu(rank_values, expect):
    from neurogen_tui.train.parallel import DataParallel

    par = DataParallel.__new__(DataParallel)
    par.rank, par.world_size, par.is_main, par.sharded = 0, len(rank_values), True, False
    nan = float("nan")
    rows = []
    for util, temp in rank_values:
        rows.append([2.0, 0.5, 1e5, 0.0, 100.0, 0.0, 100.0, 0.01,
                     nan if util is None else util, 1000.0, 300.0, nan if temp is None else temp, 81920.0, 1980.0,
                     1e-3])
    par.gather_floats = lambda values, everywhere=False: rows
    m = metrics(1)
    said = []
    trainer = SimpleNamespace(mfu=lambda tps: None, cfg=SimpleNamespace(viz_interval=50),
                              _say=lambda text, level="info": said.append((level, text)))
    par.job_metrics(trainer, m, False)
    assert (m.gpu_util, m.gpu_temp_c) == expect and m.gpu_power_w == 300.0
    assert said == []  # every rank trained with the same learning rate
    rows[-1][-1] = 2e-3  # a rank that missed a live change
    par.job_metrics(trainer, metrics(2), False)
    assert said and said[0][0] == "error" and "different learning rates" in said[0][1]
