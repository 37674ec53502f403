"""export --format tensorboard|csv|parquet and --tensorboard (issue #18): files other tools read."""
import json
import os
import socket
import threading
import time

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from neurogen_tui.cli.entry import main
from neurogen_tui.run.files import dumps
from neurogen_tui.viz.formats import TAGS, follow
from neurogen_tui.run.metricsfile import read_metrics
from neurogen_tui.run.info import boot_id, process_start


def events(logdir):
    """TensorBoard's own reader: every scalar kept (no reservoir sampling)."""
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    assert main(["--headless", "--model", "tiny", "--dataset", "sample", "--max-chunks", "30", "--tokens-per-chunk",
                 "512", "--eval-interval", "10", "--sample-interval", "3", "--sample-budget", "0",
                 "--run-dir", str(run), "--tensorboard"]) == 0
    return run


def rows_of(run):
    return [json.loads(line) for line in (run / "training_viz" / "metrics.jsonl").read_text().splitlines()]


def assert_scalars_match(acc, rows):
    for field, tag in TAGS.items():
        want = [(r["step"], r[field]) for r in rows if r.get(field) is not None]
        if not want:
            assert tag not in acc.Tags()["scalars"]
            continue
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in want], tag
        assert np.allclose([v for _, v in got], [v for _, v in want], rtol=1e-6), tag  # float32 in the events


def test_export_tensorboard_reads_back_with_tensorboards_reader(finished_run, tmp_path, capsys):
    out = tmp_path / "tb"
    assert main(["export", str(finished_run), "--format", "tensorboard", "-o", str(out)]) == 0
    assert "30 steps" in capsys.readouterr().out
    acc = events(out)
    rows = rows_of(finished_run)
    assert_scalars_match(acc, rows)
    assert [e.step for e in acc.Scalars("val/loss")] == [10, 20, 30]
    texts = acc.Tensors("samples/text_summary")
    samples = [json.loads(x) for x in (finished_run / "training_viz" / "samples.jsonl").read_text().splitlines()]
    assert [t.step for t in texts] == [s["step"] for s in samples]
    assert samples[0]["output"] in texts[0].tensor_proto.string_val[0].decode()


def test_the_live_tensorboard_writer_wrote_every_step_and_is_gone(finished_run):
    acc = events(finished_run / "tensorboard")
    assert_scalars_match(acc, rows_of(finished_run))
    log = (finished_run / "neurogen-tui.log").read_text()
    assert "tensorboard: writing events to" in log and "event writer ended with status" not in log


def test_csv_and_parquet_round_trip(finished_run, tmp_path):
    table = read_metrics(finished_run / "training_viz")
    for fmt, read in (("csv", pcsv.read_csv), ("parquet", pq.read_table)):
        out = tmp_path / f"m.{fmt}"
        assert main(["export", str(finished_run), "--format", fmt, "-o", str(out)]) == 0
        back = read(out)
        assert back.column("step").to_pylist() == list(table.columns["step"])
        for name in ("loss", "accuracy", "tokens_per_sec", "learning_rate", "val_loss", "grad_norm"):
            got = np.array([np.nan if v is None else v for v in back.column(name).to_pylist()], float)
            assert np.allclose(got, table.columns[name], equal_nan=True, rtol=1e-12), (fmt, name)
        samples = read(tmp_path / f"m_samples.{fmt}")
        written = [json.loads(x) for x in (finished_run / "training_viz" / "samples.jsonl").read_text().splitlines()]
        assert samples.column("output").to_pylist() == [s["output"] for s in written]  # text with any character


def test_export_refuses_bad_input_in_one_line_before_writing(finished_run, tmp_path, capsys):
    out = tmp_path / "tb"
    assert main(["export", str(finished_run), "--format", "tensorboard", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", str(finished_run), "--format", "tensorboard", "-o", str(out)]) == 2  # would duplicate
    assert main(["export", str(finished_run), "--format", "csv", "--follow"]) == 2
    assert main(["export", str(tmp_path / "nothing"), "--format", "csv"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("neurogen-tui: error: ") for line in err)
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(SystemExit) as usage:
        main(["export", str(finished_run), "--format", "xlsx"])
    assert usage.value.code == 2


def test_tensorboard_flag_without_the_package_is_a_usage_error(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert main(["--test", "--headless", "--tensorboard", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'neurogen-tui[tensorboard]'" in err
    assert not (tmp_path / "run").exists()


def test_follow_reads_a_growing_run_once_until_it_ends(tmp_path):
    run = tmp_path / "run"
    viz = run / "training_viz"
    viz.mkdir(parents=True)
    row = lambda s: dumps({"step": s, "loss": 1.0 / s, "accuracy": 0.5, "tokens_per_sec": 10.0, "learning_rate": 1e-3,
                           "grad_norm": 1.0, "timestamp": 1.7e9 + s, "step_time": 0.1}) + "\n"
    (viz / "metrics.jsonl").write_text("".join(row(s) for s in range(1, 11)))
    live = {"state": "running", "host": socket.gethostname(), "boot_id": boot_id(), "pid": os.getpid(),
            "pid_start": process_start(os.getpid())}  # this process stands for the trainer
    (run / "run.json").write_text(json.dumps(live))
    done = {}
    thread = threading.Thread(target=lambda: done.setdefault("rows", follow(run, tmp_path / "tb", poll=0.1)))
    thread.start()
    for s in range(11, 21):
        with open(viz / "metrics.jsonl", "a") as fh:
            fh.write(row(s))
        time.sleep(0.03)
    (run / "run.json").write_text(json.dumps({"state": "finished"}))
    thread.join(20)
    assert not thread.is_alive() and done["rows"] == 20
    assert [e.step for e in events(tmp_path / "tb").Scalars("train/loss")] == list(range(1, 21))


def test_export_follow_says_where_it_writes_and_that_it_follows(finished_run, tmp_path, capsys):
    out = tmp_path / "live-tb"
    assert main(["export", str(finished_run), "--format", "tensorboard", "--follow", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"neurogen-tui: following {finished_run}") and str(out) in said and "until it ends" in said
    assert list(out.glob("events.out.tfevents.*"))  # a finished run: followed to its end at once
