"""`neurogen-tui watch`: the same screen fed from a run directory that another process writes."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import pytest

from neurogen_tui.cli.commands import main_watch
from neurogen_tui.run.files import TailedFile
from neurogen_tui.tui.app import MonitorApp
from neurogen_tui.tui.charts import MetricChart
from neurogen_tui.tui.rundir import RunDirSource
from neurogen_tui.tui.source import HistoryReset, MetricsRows
from neurogen_tui.tui.widgets import LogPane, RunHeader, SamplesTable

HANG_GUARD = 280  # seconds: only so a broken build fails instead of hanging (pytest-timeout is 300); never a speed check

# A stand-in training process: run.json as the trainer keeps it (live while it writes, then its
# end), metrics and samples lines in the recorder's format, a torn line left half-written for a
# while, a checkpoint file, and log lines (the end-of-run record among them, which a viewer leaves out).
WRITER = textwrap.dedent("""
    import json, os, socket, sys, time
    run = sys.argv[1]
    viz = os.path.join(run, "training_viz"); ckpt = os.path.join(run, "checkpoints")
    time.sleep(0.5)  # the viewer starts before the run has written anything
    os.makedirs(viz); os.makedirs(ckpt)
    boot = open("/proc/sys/kernel/random/boot_id").read().strip() if os.path.exists("/proc/sys/kernel/random/boot_id") else ""
    start = open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()[19]
    record = {"state": "running", "pid": os.getpid(), "pid_start": start, "host": socket.gethostname(),
              "boot_id": boot, "updated_at": time.time(), "run_name": "stand-in", "total_steps": 40}
    def write_record(**changes):
        record.update(changes, updated_at=time.time())
        open(os.path.join(run, "run.json.tmp"), "w").write(json.dumps(record))
        os.replace(os.path.join(run, "run.json.tmp"), os.path.join(run, "run.json"))
    write_record()
    log = open(os.path.join(run, "neurogen-tui.log"), "a")
    log.write("2026-01-01 00:00:00,000 INFO neurogen_tui.cli.session: starting run in x (resume=None)\\n"); log.flush()
    metrics = open(os.path.join(viz, "metrics.jsonl"), "a")
    samples = open(os.path.join(viz, "samples.jsonl"), "a")
    for step in range(1, 41):
        row = {"step": step, "loss": 5.0 - step * 0.05, "accuracy": step / 100, "tokens_per_sec": 1000.0 + step,
               "gpu_memory_mb": 0.0, "learning_rate": 1e-3, "timestamp": time.time(), "tokens_seen": step * 1024,
               "rss_mb": 400.0}
        line = json.dumps(row) + "\\n"
        if step == 20:  # torn: half a line on disk for a while
            metrics.write(line[:25]); metrics.flush(); time.sleep(3.0); line = line[25:]  # (a loaded machine sees 19 late)
        metrics.write(line); metrics.flush()
        if step % 5 == 0:
            samples.write(json.dumps({"step": step, "input": "in [b]put", "target": "target", "output": "out\\x1b[2J",
                                      "accuracy": 0.5}) + "\\n"); samples.flush()
        if step == 30:
            open(os.path.join(ckpt, "checkpoint_step_000030.pt"), "wb").close()
        time.sleep(0.05)
    log.write("2026-01-01 00:00:08,000 WARNING neurogen_tui.train.data: data: starting epoch 2\\n")
    log.write("2026-01-01 00:00:09,000 INFO neurogen_tui.end: run finished (completed) at step 40\\n")
    log.flush()
    write_record(state="finished", reason="completed", step=40,
                 last_checkpoint=os.path.join(ckpt, "checkpoint_step_000030.pt"))
""")


async def wait_for(pilot, condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await pilot.pause(0.05)


def test_watch_follows_a_directory_that_another_process_is_writing(tmp_path):
    run_dir = tmp_path / "run"
    app = MonitorApp(RunDirSource(run_dir, poll=0.1))
    seen_steps: list[int] = []

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.state == "waiting", "the waiting state")
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir)])
            try:
                await wait_for(pilot, lambda: seen_steps.append(app.step) or app.step >= 19, "step 19")
                await pilot.pause(0.4)  # step 20 is half-written: nothing past 19 may show
                assert app.step == 19 and len(app.run_state.history) == 19
                await wait_for(pilot, lambda: app.state == "finished", "the finished state")
            finally:
                writer.wait(timeout=60)
            await pilot.pause(0.5)
            history = app.run_state.history
            assert history.column("steps").tolist() == list(range(1, 41))  # each step once, torn line included
            assert history.last("loss") == pytest.approx(5.0 - 40 * 0.05)
            assert app.query_one(RunHeader).info.read_only
            assert all(c.points > 0 for c in app.query(MetricChart))
            table = app.query_one(SamplesTable)
            assert table.row_count == 8 and table.get_row_at(0)[0].plain == "40"
            assert table.get_row_at(0)[3].plain == "out\\x1b[2J"
            logs = "\n".join(app.query_one(LogPane).texts)
            assert "checkpoint @ step 30" in logs and "run finished (completed) at step 40" in logs
            assert "data: starting epoch 2" in logs  # a warning from the run's log
            assert logs.count("run finished") == 1  # from run.json, not again from the log
            await pilot.press("p", "c", "d")  # read-only: nothing to pause, nothing breaks
            assert app.return_code is None
            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, "the viewer to close")

    asyncio.run(scenario())
    assert app.return_code == 0
    assert seen_steps[0] == 0 and seen_steps == sorted(seen_steps)  # it grew as the files grew


def test_tailed_file_waits_for_a_torn_line_and_starts_over_when_rewritten(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = TailedFile(path)
    assert tail.read() == ([], False)  # not there yet
    path.write_text('{"step": 1}\n{"step": 2')
    rows, restarted = tail.read()
    assert [r["step"] for r in rows] == [1] and not restarted
    with open(path, "a") as fh:
        fh.write(', "loss": 1.0}\n')
    assert [r["step"] for r in tail.read()[0]] == [2]
    replacement = tmp_path / "new.jsonl"
    replacement.write_text('{"step": 1}\n')
    replacement.replace(path)  # a resumed run trims the file atomically: a new inode, shorter
    rows, restarted = tail.read()
    assert restarted and [r["step"] for r in rows] == [1]


def test_a_rewritten_metrics_file_replaces_the_history(tmp_path):
    viz = tmp_path / "training_viz"
    viz.mkdir()
    metrics = viz / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0, "timestamp": s}) + "\n" for s in range(1, 6)))
    source = RunDirSource(tmp_path)
    source.files.poll()
    first = [e for e in source.drain() if isinstance(e, MetricsRows)]
    assert first[0].columns["steps"].tolist() == [1, 2, 3, 4, 5]
    tmp = viz / "tmp"
    tmp.write_text("".join(json.dumps({"step": s, "loss": 2.0, "timestamp": s}) + "\n" for s in range(1, 4)))
    tmp.replace(metrics)
    source.files.poll()
    events = source.drain()
    assert any(isinstance(e, HistoryReset) for e in events)
    rows = [e for e in events if isinstance(e, MetricsRows)]
    assert rows[0].columns["steps"].tolist() == [1, 2, 3]


def test_watch_refuses_a_file_for_a_directory_and_a_typo_unless_asked_to_wait(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main_watch([str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main_watch([str(tmp_path / "sampel")]) == 2
    err = capsys.readouterr().err
    assert "no such directory" in err and "--wait" in err and err.count("\n") == 1


def test_a_mistyped_command_is_told_the_one_it_meant(capsys):
    from neurogen_tui.cli.entry import main

    assert main(["wacth", "runs/a"]) == 2
    assert "did you mean `neurogen-tui watch`" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "training takes --flags only" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_watch_follows_a_real_headless_run_to_its_end(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "neurogen_tui", "--headless", "--test", "--max-chunks", "15",
                             "--run-dir", str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    app = MonitorApp(RunDirSource(run_dir, poll=0.2))

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            try:
                await wait_for(pilot, lambda: 0 < app.step < 15 and app.state == "watching", "a live step")
                await wait_for(pilot, lambda: app.state == "finished", "the finished state")
            finally:
                proc.wait(timeout=120)
            await pilot.pause(0.5)
            assert app.step == 15 and app.run_state.total == 15
            assert app.query_one(SamplesTable).row_count > 0
            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, "the viewer to close")

    asyncio.run(scenario())
    assert proc.returncode == 0


def test_watch_shows_a_finished_run_as_it_happened(tmp_path):
    """A run of 8:25 (run.json), 300 steps, a checkpoint, an lr change and a pause in its timeline:
    the viewer's clock is the run's, and each event is shown at the time it happened."""
    run = tmp_path / "run"
    viz = run / "training_viz"
    viz.mkdir(parents=True)
    start = time.time() - 3600
    (viz / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": s, "loss": 3.0, "accuracy": 0.2, "tokens_per_sec": 1e3, "learning_rate": 1e-3,
         "timestamp": start + s * 1.5, "step_time": 1.5}) + "\n" for s in range(1, 301)))
    stamps = {"checkpoint": start + 100, "setting": start + 200, "paused": start + 250}
    (viz / "events.jsonl").write_text("\n".join(json.dumps(e) for e in (
        {"step": 0, "time": start, "kind": "started", "device": "cpu"},
        {"step": 60, "time": stamps["checkpoint"], "kind": "checkpoint", "path": "checkpoints/checkpoint_step_000060.pt"},
        {"step": 130, "time": stamps["setting"], "kind": "setting", "changes": {"lr": [0.001, 0.0005]}, "source": "ctl"},
        {"step": 160, "time": stamps["paused"], "kind": "paused"})) + "\n")
    (run / "run.json").write_text(json.dumps({"state": "finished", "started_at": start, "ended_at": start + 505,
                                              "step": 300, "total_steps": 300, "reason": "completed"}))
    app = MonitorApp(RunDirSource(run, poll=0.1))

    async def scenario():
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.state == "finished" and app.step == 300, "the finished run")
            await pilot.pause(0.3)
            assert app.run_state.header().elapsed == 505  # 8:25, the run's own, not the last rows' or the viewer's
            lines = [line for line in app.query_one(LogPane).texts]
            for text, when in (("checkpoint checkpoint_step_000060.pt", "checkpoint"),
                               ("lr 0.001 -> 0.0005", "setting"), ("step 160: paused", "paused")):
                line = next((x for x in lines if text in x), None)
                assert line is not None, (text, lines)
                assert line.startswith(time.strftime("%H:%M:%S", time.localtime(stamps[when]))), line
            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, "the viewer to close")

    asyncio.run(scenario())
