import json
import os
from pathlib import Path

import pytest
import zstandard

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # the suite runs on as many workers as cores (pyproject.toml): one torch thread each (and in the
    # trainers they start), or OpenMP's spinning threads fight over the cores and everything crawls
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def screen_at_full_rate(monkeypatch):
    """Pilot tests check what reaches the screen, so the app draws at full rate whatever the
    machine's load; the CPU budget that spaces its work out has its own tests (test_budget.py)."""
    from neurogen_tui.tui.app import MonitorApp

    monkeypatch.setattr(MonitorApp, "UI_BUDGET", 0.0)


@pytest.fixture(autouse=True)
def own_config_dir(tmp_path_factory, monkeypatch):
    """Each test (and every process it starts) keeps its chart settings in a directory of its own,
    never in the user's ~/.config."""
    path = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("NEUROGEN_TUI_CONFIG_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def unfrozen_gc():
    """An app over a live trainer calls gc.freeze() once training has begun; in the one pytest
    process that would keep every earlier test's objects out of collection."""
    yield
    import gc

    gc.unfreeze()


@pytest.fixture
def tiny_cfg(tmp_path):
    """The --test configuration (tiny model, bundled sample) in a temporary run dir."""
    from neurogen_tui.train.config import TrainingConfig

    cfg = TrainingConfig(run_dir=str(tmp_path / "run"))
    cfg.apply_test_mode()
    return cfg


def write_jsonl_zst(path: Path, records: list) -> Path:
    raw = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    return path


@pytest.fixture
def shard(tmp_path):
    """A small local shard in SlimPajama's own format."""
    docs = [{"text": f"Document number {i}: the quick brown fox jumps over the lazy dog. " * 3,
             "meta": {"redpajama_set_name": "RedPajamaC4"}} for i in range(200)]
    return write_jsonl_zst(tmp_path / "shard-000.jsonl.zst", docs)


def header_text(info, size=(120, 4)) -> str:
    """What the app's RunHeader draws for a HeaderInfo, in a bare app of `size`."""
    import asyncio

    from textual.app import App

    from neurogen_tui.tui.widgets import RunHeader

    class HeaderApp(App):
        def compose(self):
            yield RunHeader()

    async def shown() -> str:
        app = HeaderApp()
        async with app.run_test(size=size) as pilot:
            header = app.query_one(RunHeader)
            header.info = info
            await pilot.pause()
            return header.render().plain

    return asyncio.run(shown())
