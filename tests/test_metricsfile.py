"""metrics.jsonl read in bulk (pyarrow) and its columnar sidecar metrics.arrows (issue #18)."""
import json
import math

import numpy as np
import pytest
import pyarrow as pa
from neurogen_tui.core.events import TrainingMetrics
from neurogen_tui.run.files import dumps
from neurogen_tui.run.metricsfile import FIELDS, parse_jsonl, read_metrics, read_sidecar
from neurogen_tui.run.sidecar import SidecarWriter
from neurogen_tui.run.recorder import MetricsRecorder
from neurogen_tui.run.reader import load_history
from neurogen_tui.tui.follow import FilesFollower
from neurogen_tui.tui.source import MetricsRows


def metrics(step: int, **extra) -> TrainingMetrics:
    return TrainingMetrics(step=step, loss=5.0 / step, accuracy=0.01 * step, tokens_per_sec=1000.0 + step,
                           gpu_memory_mb=0.0, learning_rate=1e-3, timestamp=1.7e9 + step, grad_norm=0.5,
                           tokens_seen=1024 * step, rss_mb=400.0, step_time=0.05, **extra)


def python_rows(path):
    """What the line-by-line reader of before made of the file: the reference."""
    out = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            out.append(row)
    return out


def record(viz, steps, resume_step=None):
    rec = MetricsRecorder(viz, resume_step=resume_step)
    for s in steps:
        rec(metrics(s, val_loss=4.0 if s % 10 == 0 else None))
    return rec


def same_as_reference(table, rows):
    assert list(table.columns["step"]) == [r["step"] for r in rows]
    for name in FIELDS[1:]:
        want = [float(r[name]) if isinstance(r.get(name), (int, float)) else math.nan for r in rows]
        assert np.allclose(table.columns[name], want, equal_nan=True), name


def test_torn_last_line_nulls_and_fields_of_a_newer_version_read_as_before(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [metrics(1).to_dict(), {**metrics(2).to_dict(), "loss": None, "cpu_util": 180.0, "new": {"x": 1}},
            {**metrics(3).to_dict(), "val_loss": 3.5}]
    path.write_text("".join(dumps(r) + "\n" for r in rows) + '{"step": 4, "loss": 1.')  # torn: still being written
    table = read_metrics(tmp_path)
    same_as_reference(table, python_rows(path))
    assert list(table.columns["step"]) == [1, 2, 3]
    assert math.isnan(table.columns["loss"][1]) and table.columns["val_loss"][2] == 3.5
    assert table.end == path.read_bytes().rfind(b"\n") + 1
    history = load_history(tmp_path)
    assert list(history.column("steps")) == [1, 2, 3] and math.isnan(history.column("loss")[1])


def test_a_corrupt_line_is_skipped_and_the_rest_still_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = [metrics(s).to_dict() for s in range(1, 6)]
    lines = [dumps(r) for r in good]
    lines.insert(2, '{"step": 99, "loss": ')  # a line cut by a crash, then appended after
    lines.insert(4, '[1, 2]')
    lines.insert(5, '{"loss": 1.0}')  # no step
    path.write_text("\n".join(lines) + "\n")
    table = read_metrics(tmp_path)
    assert list(table.columns["step"]) == [1, 2, 3, 4, 5]
    same_as_reference(table, python_rows(path))


def test_the_recorder_keeps_a_sidecar_that_reads_the_same_as_the_jsonl(tmp_path):
    viz = tmp_path / "training_viz"
    rec = record(viz, range(1, 601))
    assert rec.metrics.size == (viz / "metrics.jsonl").stat().st_size  # each line is on disk once written
    # while the run goes: the sidecar holds the full batches, the lines after them are parsed
    live = read_metrics(viz)
    assert len(read_sidecar(viz / "metrics.arrows")) == 512 and len(live) == 600
    rec.close()
    side = read_sidecar(viz / "metrics.arrows")
    assert len(side) == 600 and side.end == (viz / "metrics.jsonl").stat().st_size
    same_as_reference(read_metrics(viz), python_rows(viz / "metrics.jsonl"))
    other_tools = pa.ipc.open_stream((viz / "metrics.arrows").read_bytes()).read_all()  # pyarrow, pandas, polars
    assert other_tools.column("step").to_pylist() == list(range(1, 601))


def test_a_sidecar_out_of_step_with_the_jsonl_is_not_trusted(tmp_path):
    viz = tmp_path / "training_viz"
    record(viz, range(1, 301)).close()
    path = viz / "metrics.jsonl"
    rows = python_rows(path)
    # the JSONL rewritten by something else (same length, other values): the sidecar no longer matches it
    rows = [{**r, "timestamp": r["timestamp"] + 1} for r in rows]
    path.write_text("".join(dumps(r) + "\n" for r in rows))
    same_as_reference(read_metrics(viz), rows)
    # a torn last batch (a crash mid-append) leaves the complete ones readable
    record(viz, range(1, 301)).close()
    data = (viz / "metrics.arrows").read_bytes()
    (viz / "metrics.arrows").write_bytes(data[:-100])
    assert len(read_sidecar(viz / "metrics.arrows")) == 256
    same_as_reference(read_metrics(viz), python_rows(path))


def test_resume_cuts_the_rows_after_its_step_and_rebuilds_the_sidecar(tmp_path):
    viz = tmp_path / "training_viz"
    record(viz, range(1, 301)).close()
    (viz / "metrics.arrows").unlink()  # a run of an older version: no sidecar
    rec = record(viz, range(201, 211), resume_step=200)
    rec.close()
    table = read_metrics(viz)
    assert list(table.columns["step"]) == list(range(1, 211))
    assert len(read_sidecar(viz / "metrics.arrows")) == 210
    same_as_reference(table, python_rows(viz / "metrics.jsonl"))


def test_parse_matches_the_line_loop_on_a_real_run(tmp_path, tiny_cfg):
    from neurogen_tui.core.events import EventBus
    from neurogen_tui.train.trainer import Trainer

    tiny_cfg.max_chunks = 12
    bus = EventBus()
    rec = MetricsRecorder(tiny_cfg.viz_dir)
    bus.subscribe(rec)
    Trainer(tiny_cfg, bus).run()  # the real trainer's metrics, as the recorder writes them
    rec.close()
    viz = tiny_cfg.viz_dir
    data = (viz / "metrics.jsonl").read_bytes()
    same_as_reference(parse_jsonl(data), python_rows(viz / "metrics.jsonl"))
    same_as_reference(read_metrics(viz), python_rows(viz / "metrics.jsonl"))
    assert len(read_sidecar(viz / "metrics.arrows")) == 12
    rows = python_rows(viz / "metrics.jsonl")  # the machine under the run (#19), from the real trainer
    assert "cpu_util" not in rows[0] and all(r["cpu_util"] > 1.0 for r in rows[1:])  # % of one core
    assert all(0.0 <= r["data_time"] < r["step_time"] for r in rows)
    assert rows[0]["data_time"] > 0  # the first step waits for the shuffle window to fill


def test_following_a_live_run_reads_only_the_new_rows_the_second_time(tmp_path, monkeypatch):
    import neurogen_tui.run.files as files

    run = tmp_path / "run"
    rec = record(run / "training_viz", range(1, 1001))
    seen = []
    follower = FilesFollower(run, seen.append, report_state=False)
    follower._poll_metrics()
    first = [e for e in seen if isinstance(e, MetricsRows)]
    assert len(first) == 1 and list(first[0].columns["steps"]) == list(range(1, 1001))
    assert first[0].tail[-1]["step"] == 1000
    after_first = follower.metrics.offset
    assert after_first == (run / "training_viz" / "metrics.jsonl").stat().st_size
    offsets = []
    real = files.read_jsonl
    monkeypatch.setattr(files, "read_jsonl", lambda path, offset=0: offsets.append(offset) or real(path, offset))
    for s in range(1001, 1004):
        rec(metrics(s))
    seen.clear()
    follower._poll_metrics()
    rows = [e for e in seen if isinstance(e, MetricsRows)]
    assert offsets == [after_first]  # one read, from where the first look ended
    assert list(rows[0].columns["steps"]) == [1001, 1002, 1003]
    rec.close()


def test_sidecar_writer_starts_from_a_table_and_appends(tmp_path):
    viz = tmp_path
    (viz / "metrics.jsonl").write_text("".join(dumps(metrics(s).to_dict()) + "\n" for s in (1, 2)))
    writer = SidecarWriter(viz, read_metrics(viz))
    size = (viz / "metrics.jsonl").stat().st_size
    with open(viz / "metrics.jsonl", "a") as fh:
        line = dumps(metrics(3).to_dict()) + "\n"
        fh.write(line)
    writer.add(metrics(3).to_dict(), size + len(line.encode()))
    writer.close()
    assert list(read_sidecar(viz / "metrics.arrows").columns["step"]) == [1, 2, 3]
    assert list(read_metrics(viz).columns["step"]) == [1, 2, 3]


def test_samples_are_cut_and_read_from_the_end_of_the_file(tmp_path):
    from neurogen_tui.run.files import cut_jsonl_after, tail_jsonl
    from neurogen_tui.run.reader import load_samples

    path = tmp_path / "samples.jsonl"
    rows = [{"step": s, "input": "i", "target": "t", "output": "o\n" * 40, "accuracy": 0.5} for s in range(1, 20001)]
    path.write_text("".join(dumps(r) + "\n" for r in rows) + '{"step": 20001, "inp')  # torn
    tail, end = tail_jsonl(path, 3)
    assert [r["step"] for r in tail] == [19998, 19999, 20000] and end == path.read_bytes().rfind(b"\n") + 1
    assert [s["step"] for s in load_samples(tmp_path, limit=5)] == list(range(19996, 20001))
    assert len(load_samples(tmp_path, limit=None)) == 20000
    assert cut_jsonl_after(path, 12345) == 20000 - 12345  # the torn line goes too
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == list(range(1, 12346))
    assert cut_jsonl_after(path, 99999) == 0 and cut_jsonl_after(path, 0) == 12345 and path.read_bytes() == b""


def test_a_file_read_in_blocks_reads_the_same_whatever_the_block(tmp_path, monkeypatch):
    """metrics.jsonl is parsed BLOCK bytes at a time (a 10M-step file is ~3 GB): lines across block
    ends, lines longer than a block, a corrupt line and a torn last one all read as one read does."""
    import neurogen_tui.run.metricsfile as mf

    path = tmp_path / "metrics.jsonl"
    lines = [dumps(metrics(s).to_dict()) for s in range(1, 41)]
    lines[7] = dumps({**metrics(8).to_dict(), "note": "x" * 900})  # longer than the smallest block
    lines.insert(20, '{"step": 99, "loss": ')
    path.write_text("\n".join(lines) + "\n" + '{"step": 41')
    whole = read_metrics(tmp_path)
    for block in (64, 333, 1000, 1 << 20):
        monkeypatch.setattr(mf, "BLOCK", block)
        got = read_metrics(tmp_path)
        assert list(got.columns["step"]) == list(range(1, 41)) == list(whole.columns["step"]), block
        assert got.end == whole.end == path.read_bytes().rfind(b"\n") + 1
        same_as_reference(got, python_rows(path))


def test_any_numeric_key_is_a_column_and_a_late_key_widens_the_sidecar(tmp_path):
    """A loop that is not our trainer logs its own names; one appears only at its evaluations."""
    from neurogen_tui.run.files import JsonlWriter
    from neurogen_tui.run.sidecar import SidecarWriter

    viz = tmp_path / "training_viz"
    viz.mkdir()
    lines, side = JsonlWriter(viz / "metrics.jsonl"), SidecarWriter(viz)
    for step in range(1, 701):
        row = {"step": step, "timestamp": 1000.0 + step, "train/loss": 3.0 - step / 1000, "note": "text is no column"}
        if step % 100 == 0:
            row["eval/acc"] = step / 1000  # first seen at step 100, after a batch of 256 is out... and again
        side.add(row, lines.write(row))
    live = read_metrics(viz)  # the sidecar's 512 rows, the rest parsed
    side.close()
    lines.close()
    table = read_metrics(viz)
    for t in (live, table):
        assert len(t) == 700 and t.extra == ("train/loss", "eval/acc")
        assert t.columns["train/loss"][-1] == pytest.approx(2.3)
        acc = t.columns["eval/acc"]
        assert np.isnan(acc[:99]).all() and acc[99] == pytest.approx(0.1) and acc[699] == pytest.approx(0.7)
        assert "note" not in t.columns
    with_side = read_sidecar(viz / "metrics.arrows")
    assert len(with_side) == 700 and with_side.extra == ("train/loss", "eval/acc")
    assert pa.ipc.open_stream((viz / "metrics.arrows").read_bytes()).read_all().column("eval/acc").null_count == 693


def test_a_long_run_without_a_sidecar_shows_its_last_rows_first_and_gets_a_sidecar_once(tmp_path, monkeypatch):
    """#29.5: the first screen comes from the file's tail, the whole history behind it (replacing
    it), and an ended run read from its JSONL gets its sidecar where the directory is writable."""
    import neurogen_tui.run.reader as reader
    import neurogen_tui.tui.follow as follow

    run = tmp_path / "run"
    viz = run / "training_viz"
    record(viz, range(1, 3001)).close()
    (viz / "metrics.arrows").unlink()  # as an older version or another writer leaves it
    monkeypatch.setattr(follow, "FIRST_FROM_TAIL", 1000)
    monkeypatch.setattr(reader, "SIDECAR_WORTH", 100)
    seen = []
    FilesFollower(run, seen.append, report_state=False)._poll_metrics()
    first, whole = [e for e in seen if isinstance(e, MetricsRows)]
    assert first.columns["steps"][-1] == 3000 and len(first.columns["steps"]) == 500 and not first.replace
    assert whole.replace and list(whole.columns["steps"]) == list(range(1, 3001))
    assert (viz / "metrics.arrows").exists()
    table = read_metrics(viz)
    assert table.sidecar_rows == 3000  # the next open reads the columns, not the text
    same_as_reference(table, python_rows(viz / "metrics.jsonl"))


def test_no_sidecar_is_built_where_the_run_dir_is_read_only(tmp_path, monkeypatch):
    """Read-only for everyone: a mode for a user, a read-only bind mount for root (CI runs as root)."""
    import os
    import shutil
    import subprocess

    import neurogen_tui.run.reader as reader

    viz = tmp_path / "run" / "training_viz"
    record(viz, range(1, 301)).close()
    (viz / "metrics.arrows").unlink()
    monkeypatch.setattr(reader, "SIDECAR_WORTH", 100)
    root = os.geteuid() == 0
    if root:
        if not shutil.which("mount"):
            pytest.skip("root without mount: nothing here is read-only")
        done = subprocess.run(["mount", "--bind", "-o", "ro", str(viz), str(viz)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot bind-mount read-only here: {done.stderr.decode().strip()}")
    else:
        viz.chmod(0o555)
    try:
        table = reader.read_run_metrics(viz)
    finally:
        subprocess.run(["umount", "-l", str(viz)], capture_output=True) if root else viz.chmod(0o755)
    assert len(table) == 300 and not (viz / "metrics.arrows").exists()
