"""Regenerate the README's pictures from a real short training run.

    python scripts/make_screenshots.py [--steps 300] [--size 120x36] [--out assets]

Trains the tiny model on the bundled sample inside the Textual app (headless, the given terminal
size), saves Textual's SVG screenshot of the screen as <out>/app.svg once --steps*0.8 steps are
done, stops with q like a user (final checkpoint, dashboard and JSON), and copies the run's
training_latest.png to <out>/training_latest.png (when the dashboards are available).
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neurogen_tui.train.config import TrainingConfig  # noqa: E402
from neurogen_tui.cli.session import build_run, setup_logging  # noqa: E402
from neurogen_tui.tui.app import MonitorApp  # noqa: E402
from neurogen_tui.tui.source import InProcessSource  # noqa: E402


def config(run_dir: Path, steps: int) -> TrainingConfig:
    cfg = TrainingConfig(run_dir=str(run_dir), run_name="tiny-sample")
    cfg.apply_test_mode()
    cfg.max_chunks = steps
    cfg.epochs = 0
    cfg.sample_interval = 10
    cfg.eval_interval = 50
    cfg.viz_interval = 100
    cfg.checkpoint_interval = 100
    cfg.warmup_steps = 20
    return cfg


async def shoot(app: MonitorApp, size: tuple[int, int], at_step: int, svg: Path) -> None:
    async with app.run_test(size=size) as pilot:
        while app.step < at_step and app.run_state.done is None:
            await pilot.pause(0.2)
        await pilot.pause(1.0)  # a chart redraw after the last step counted
        while app.charts_building:
            await pilot.pause(0.1)
        app.draw_charts(force=True)
        await pilot.pause(0.1)
        while app.charts_building:
            await pilot.pause(0.1)
        await pilot.pause(0.3)
        app.save_screenshot(filename=svg.name, path=str(svg.parent))
        await pilot.press("q")
        while app.return_code is None:
            await pilot.pause(0.2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", default="120x36", help="terminal size, COLUMNSxROWS")
    p.add_argument("--out", default=str(ROOT / "assets"))
    args = p.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp) / "tiny-sample", args.steps)
        setup_logging(cfg)
        parts = build_run(cfg, None, control=False)
        app = MonitorApp(InProcessSource(parts))
        asyncio.run(shoot(app, (width, height), int(args.steps * 0.8), out / "app.svg"))
        print(f"wrote {out / 'app.svg'} at step {app.step}")
        png = cfg.viz_dir / "training_latest.png"
        if png.exists():
            shutil.copyfile(png, out / "training_latest.png")
            print(f"wrote {out / 'training_latest.png'}")
        else:
            print("no training_latest.png (dashboards unavailable); assets/training_latest.png left as it was")
    return 0


if __name__ == "__main__":
    sys.exit(main())
