"""MFU: PaLM's FLOPs per token, the GPU peak table, and no made-up peak for an unknown device."""
import pytest

from neurogen_tui.core.events import TrainingMetrics
from neurogen_tui.train.mfu import MfuMeter, flops_per_token, mfu, peak_tflops


def test_flops_per_token_is_6n_plus_attention_term_for_gpt2_124m():
    # a GPT-2-124M-shaped model (parameters without the position embedding)
    n, layers, heads, head_dim, ctx = 124_337_664, 12, 12, 64, 1024
    assert flops_per_token(n, layers, heads, head_dim, ctx) == 6 * n + 12 * 12 * 12 * 64 * 1024
    assert flops_per_token(n, layers, heads, head_dim, ctx) == pytest.approx(8.59e8, rel=0.001)  # ~6N + 7%


def test_mfu_of_a_known_run_on_an_a100():
    # nanoGPT's own example: 124M on an A100 at ~ 0.5 of peak would need this many tokens/s
    fpt = flops_per_token(124_337_664, 12, 12, 64, 1024)
    tokens_per_sec = 0.5 * 312e12 / fpt
    assert mfu(tokens_per_sec, fpt, peak_tflops("NVIDIA A100-SXM4-80GB")) == pytest.approx(0.5)
    # summed over 8 ranks: the job's tokens/s over 8 peaks
    assert mfu(8 * tokens_per_sec, fpt, 312.0, devices=8) == pytest.approx(0.5)


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-40GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA A10", 125.0), ("NVIDIA L40S", 362.05), ("NVIDIA L40", 181.05), ("NVIDIA L4", 121.0),
    ("NVIDIA GeForce RTX 4090", 165.2), ("AMD Instinct MI300X", 1307.4),
])
def test_peak_table_matches_device_names_most_specific_first(name, tflops):
    assert peak_tflops(name) == tflops


@pytest.mark.parametrize("name", ["NVIDIA A10G", "Tesla T4", "NVIDIA GeForce GTX 1080", "cpu"])
def test_unknown_device_has_no_peak_rather_than_an_a100s(name):
    assert peak_tflops(name) is None


def test_meter_says_so_for_an_unknown_gpu_and_accepts_an_override():
    unknown = MfuMeter("cuda", "NVIDIA A10G", None, fpt=1e9)
    assert unknown(1e5) is None and "--peak-tflops" in unknown.note and "A10G" in unknown.note
    given = MfuMeter("cuda", "NVIDIA A10G", 70.0, fpt=1e9)
    assert given(7e4) == pytest.approx(1e9 * 7e4 / 70e12) and not given.note
    assert MfuMeter("cpu", "cpu", None, fpt=1e9)(1e5) is None  # no MFU on CPU, and nothing to say


def _row(step: int, mfu_value):
    return {"step": step, "loss": 3.0, "accuracy": 0.25, "tokens_per_sec": 1e5, "learning_rate": 1e-3,
            "timestamp": 1.7e9 + step, "tokens_seen": step * 1024, "gpu_memory_mb": 1000.0, "mfu": mfu_value}


def test_header_shows_mfu_where_metrics_have_it_and_nothing_on_cpu():
    from conftest import header_text

    from neurogen_tui.tui.state import RunView

    gpu, cpu = RunView("gpu-run"), RunView("cpu-run")
    gpu.apply_all([TrainingMetrics(**_row(1, 0.4123))])
    cpu.apply_all([TrainingMetrics(**_row(1, None))])
    assert gpu.header().mfu == pytest.approx(0.4123) and cpu.header().mfu is None
    assert "MFU 41.2%" in header_text(gpu.header())
    assert "MFU" not in header_text(cpu.header())


def test_dashboard_draws_mfu_on_the_throughput_panel_only_when_known():
    from neurogen_tui.viz.figure import DASHBOARD_COLUMNS, Dashboard, dashboard_title
    from neurogen_tui.run.history import MetricsHistory

    def columns(mfu_value):
        history = MetricsHistory()
        for step in range(1, 101):
            history.append(_row(step, mfu_value))
        return history.slice(names=DASHBOARD_COLUMNS)

    board = Dashboard()
    board.update(columns(None), [], "cpu-run")
    assert board.mfu is None and "MFU" not in board.title.get_text()
    board.update(columns(0.38), [], "gpu-run")
    assert board.mfu.axes.get_ylabel() == "MFU (%)"
    assert list(board.mfu.get_ydata()) == pytest.approx([38.0] * len(board.mfu.get_ydata()))
    assert "MFU 38.0%" in dashboard_title("gpu-run", columns(0.38))
