"""The CUDA path, on a real GPU: `pytest -m gpu` (benchmarks/gpu_check.py runs it there). Every
test skips where CUDA is missing, so on a CPU box (CI) they are collected, and skipped.

bf16 autocast and TF32 make a GPU run differ from fp32 by rounding, and cuBLAS may pick other
kernels from run to run, so comparisons here are to bf16's tolerance, not bit for bit."""
import math

import pytest
import torch
import torch.nn.functional as F

from neurogen_tui.train.checkpoint import load_checkpoint
from neurogen_tui.core.events import EventBus, RunFinished, TextSample, TrainingMetrics
from neurogen_tui.train.model import GPT, GPTConfig
from neurogen_tui.train.device import autocast
from neurogen_tui.train.trainer import Trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture
def gpu_cfg(tiny_cfg):
    tiny_cfg.device = "cuda"
    tiny_cfg.checkpoint_interval = 1000
    return tiny_cfg


def train(cfg, resume=None, stop_at=None):
    bus = EventBus()
    seen = {"metrics": {}, "samples": []}
    trainer = Trainer(cfg, bus, resume)

    def on_event(ev):
        if isinstance(ev, TrainingMetrics):
            seen["metrics"][ev.step] = ev
            if stop_at is not None and ev.step == stop_at:
                trainer.request_stop()
        elif isinstance(ev, TextSample):
            seen["samples"].append(ev)

    bus.subscribe(on_event)
    result = trainer.run()
    assert isinstance(result, RunFinished), result
    return trainer, seen, result


def test_bf16_autocast_forward_matches_fp32_to_bf16_tolerance():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=64, n_layer=2, n_head=2, n_embd=64)).cuda()
    x = torch.randint(0, 257, (4, 64), device="cuda")
    device = torch.device("cuda")
    with torch.no_grad():
        full = model(x).float()
        with autocast(device):
            half = model(x)
    assert half.dtype == torch.bfloat16  # autocast really ran the matmuls in bf16
    loss_full = F.cross_entropy(full.view(-1, 257), x.view(-1))
    loss_half = F.cross_entropy(half.float().view(-1, 257), x.view(-1))
    assert loss_half.item() == pytest.approx(loss_full.item(), rel=2e-2)
    assert (full - half.float()).abs().max().item() < 0.1 * full.abs().max().item()


def test_training_on_the_gpu_learns_and_reports_gpu_memory(gpu_cfg):
    gpu_cfg.max_chunks = 12
    trainer, seen, result = train(gpu_cfg)
    assert trainer.device.type == "cuda" and next(trainer.model.parameters()).is_cuda
    metrics = [seen["metrics"][s] for s in sorted(seen["metrics"])]
    assert all(math.isfinite(m.loss) and not m.skipped for m in metrics)
    assert metrics[-1].loss < metrics[0].loss  # it learns
    assert all(m.gpu_memory_mb > 0 for m in metrics)
    assert result.step == 12


def test_checkpoint_keeps_the_cuda_rng_and_resume_restores_it(gpu_cfg):
    gpu_cfg.max_chunks = 3
    trainer, _, result = train(gpu_cfg)
    state = load_checkpoint(result.checkpoint)
    saved = state["rng"]["cuda"]
    assert saved and all(isinstance(t, torch.Tensor) for t in saved)
    torch.cuda.manual_seed_all(12345)  # disturb it: the resume must bring the saved state back
    gpu_cfg.max_chunks = 3  # nothing left to train: setup restores, the loop ends at once
    resumed = Trainer(gpu_cfg, EventBus(), (result.checkpoint, state))
    resumed.setup()
    assert torch.equal(torch.cuda.get_rng_state(), saved[torch.cuda.current_device()])


def test_resume_on_the_gpu_equals_uninterrupted_training_to_bf16_tolerance(gpu_cfg, tmp_path):
    gpu_cfg.max_chunks = 8
    straight_cfg = type(gpu_cfg)(**{**gpu_cfg.to_dict(), "run_dir": str(tmp_path / "straight")})
    _, straight, _ = train(straight_cfg)
    _, first, result = train(gpu_cfg, stop_at=4)
    assert result.step == 4
    _, second, result2 = train(gpu_cfg, resume=(result.checkpoint, load_checkpoint(result.checkpoint)))
    assert result2.step == 8 and sorted(second["metrics"]) == [5, 6, 7, 8]
    for step in range(1, 9):
        got = (first["metrics"].get(step) or second["metrics"][step]).loss
        assert got == pytest.approx(straight["metrics"][step].loss, rel=2e-2), step


def test_text_samples_are_generated_on_the_gpu(gpu_cfg):
    gpu_cfg.max_chunks = 2
    trainer, seen, _ = train(gpu_cfg)
    assert seen["samples"], "no text sample"
    sample = seen["samples"][0]
    assert sample.output and sample.target and sample.input
    # the sample is the GPU model's own greedy continuation
    prompt = torch.tensor([list(sample.input.encode())], device="cuda")
    with torch.no_grad(), autocast(trainer.device):
        out = trainer.model.generate(prompt, len(sample.target.encode()))[0, prompt.shape[1]:]
    assert trainer.tokenizer.decode(out.tolist()) == sample.output


def test_mfu_is_reported_for_a_gpu_in_the_table(gpu_cfg):
    from neurogen_tui.train.mfu import peak_tflops

    if peak_tflops(torch.cuda.get_device_name(0)) is None:
        pytest.skip(f"{torch.cuda.get_device_name(0)} is not in the MFU table")
    gpu_cfg.max_chunks = 3
    _, seen, _ = train(gpu_cfg)
    assert all(0 < seen["metrics"][s].mfu < 1 for s in seen["metrics"])


def test_nvml_readings_reach_the_metrics_on_the_gpu(gpu_cfg):
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    gpu_cfg.max_chunks = 3
    _, seen, _ = train(gpu_cfg)
    last = seen["metrics"][3]
    assert last.gpu_mem_used_mb and last.gpu_mem_used_mb > 0
    assert last.gpu_util is not None and 0 <= last.gpu_util <= 100
    assert last.gpu_temp_c is None or 10 < last.gpu_temp_c < 110
    assert last.gpu_mem_total_mb and last.gpu_mem_total_mb > last.gpu_mem_used_mb
    assert last.gpu_sm_clock_mhz is None or 100 < last.gpu_sm_clock_mhz < 5000
