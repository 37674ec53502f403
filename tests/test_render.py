"""`neurogen-tui render` / `compare` on run directories, the first one written by a real training."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from neurogen_tui.cli import entry as cli
from neurogen_tui.cli.commands import unique_names
from neurogen_tui.viz.compare import COMPARE_PANELS, compare_figure
from neurogen_tui.run.reader import load_history, load_run, load_samples


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real 5-step --test training, headless: what every run leaves behind."""
    run_dir = tmp_path_factory.mktemp("trained") / "run-a"
    assert cli.main(["--test", "--headless", "--run-dir", str(run_dir)]) == 0
    return run_dir


def has_content(path, size=(3000, 1800)) -> bool:
    with Image.open(path) as img:
        return (size is None or img.size == size) and np.asarray(img.convert("L")).std() > 10


def test_training_leaves_the_seed_files_behind(trained_run):
    viz = trained_run / "training_viz"
    assert has_content(viz / "training_latest.png")
    assert (viz / "training_step_000005.png").read_bytes() == (viz / "training_latest.png").read_bytes()
    recorded = [json.loads(line) for line in (viz / "metrics.jsonl").read_text().splitlines()]
    exported = json.loads((viz / "metrics_history.json").read_text())
    assert exported["steps"] == [r["step"] for r in recorded] == [1, 2, 3, 4, 5]
    assert exported["loss"] == pytest.approx([r["loss"] for r in recorded], rel=1e-6)
    assert exported["accuracy"] == pytest.approx([r["accuracy"] for r in recorded], rel=1e-6, abs=1e-9)
    assert exported["throughput"] == pytest.approx([r["tokens_per_sec"] for r in recorded], rel=1e-6)
    assert exported["learning_rate"] == pytest.approx([r["learning_rate"] for r in recorded], rel=1e-6)
    assert [v is not None for v in exported["val_loss"]] == ["val_loss" in r for r in recorded]
    samples = json.loads((viz / "text_samples.json").read_text())
    produced = [json.loads(line) for line in (viz / "samples.jsonl").read_text().splitlines()]
    assert samples == [{k: p[k] for k in ("step", "input", "output", "accuracy", "target")} for p in produced]


def test_render_draws_the_dashboard_of_a_run_dir(trained_run, tmp_path, capsys):
    out = tmp_path / "dash.png"
    assert cli.main(["render", str(trained_run), "-o", str(out)]) == 0
    assert has_content(out)
    assert str(out) in capsys.readouterr().out
    assert cli.main(["render", str(trained_run / "training_viz")]) == 0  # the viz dir itself works too
    assert has_content(trained_run / "training_viz" / "training_render.png")


def test_render_reads_a_run_still_being_written(trained_run, tmp_path):
    run = tmp_path / "live"
    shutil.copytree(trained_run / "training_viz", run / "training_viz")
    with open(run / "training_viz" / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"step": 6, "loss": 4.9, "accur')  # a writer in the middle of a line
    name, history, samples = load_run(run)
    assert name == "live" and list(history.column("steps")) == [1, 2, 3, 4, 5]
    assert len(samples) == 5
    assert cli.main(["render", str(run), "-o", str(tmp_path / "live.png")]) == 0


def test_render_falls_back_to_the_json_exports(trained_run, tmp_path):
    viz = tmp_path / "exported" / "training_viz"
    viz.mkdir(parents=True)
    for name in ("metrics_history.json", "text_samples.json"):
        shutil.copy(trained_run / "training_viz" / name, viz)
    history = load_history(viz)
    original = load_history(trained_run / "training_viz")
    assert list(history.column("steps")) == [1, 2, 3, 4, 5]
    assert np.allclose(history.column("loss"), original.column("loss"), rtol=1e-6)
    assert [s["step"] for s in load_samples(viz)] == [s["step"] for s in load_samples(trained_run / "training_viz")]
    assert len(load_history(viz, max_step=3)) == 3
    assert cli.main(["render", str(viz.parent), "-o", str(tmp_path / "x.png")]) == 0


def test_compare_overlays_runs_labelled_by_name(trained_run, tmp_path):
    other = tmp_path / "run-b"
    shutil.copytree(trained_run / "training_viz", other / "training_viz")
    out = tmp_path / "cmp.png"
    assert cli.main(["compare", str(trained_run), str(other), "-o", str(out)]) == 0
    assert has_content(out)
    runs = [(name, history.slice()) for name, history, _ in (load_run(trained_run), load_run(other))]
    fig = compare_figure(runs)
    assert [ax.get_title() for ax in fig.axes] == [title for _, title, _, _ in COMPARE_PANELS]
    labels = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes]
    assert labels[0] == ["run-a", "run-a (validation)", "run-b", "run-b (validation)"]  # validation where it exists
    assert all(lab == ["run-a", "run-b"] for lab in labels[1:])
    assert fig.axes[3].get_yscale() == "log"
    assert unique_names(["run", "run", "x"]) == ["run", "run (2)", "x"]


@pytest.mark.parametrize("command", ["render", "compare"])
def test_bad_run_dirs_are_one_line_errors(command, trained_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "training_viz").mkdir(parents=True)
    (empty / "training_viz" / "metrics.jsonl").write_text("not json\n")
    good = [str(trained_run)] if command == "compare" else []
    for bad, expected in ((tmp_path / "missing", "no such directory"), (empty, "no metrics found")):
        assert cli.main([command, *good, str(bad), "-o", str(tmp_path / "o.png")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("neurogen-tui: error: ") and expected in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_compare_smooths_every_run_alike_however_short_with_tensorboards_ema():
    from neurogen_tui.run.history import debiased_ema

    rng = np.random.default_rng(0)

    def run(n: int) -> dict:
        steps = np.arange(1, n + 1)
        loss = (3.0 + rng.normal(0, 0.3, n)).astype(np.float32)
        return {"steps": steps, "loss": loss, "accuracy": np.full(n, 0.1, np.float32),
                "throughput": np.full(n, 1e3, np.float32), "learning_rate": np.full(n, 1e-3, np.float32)}

    short, long = run(30), run(400)  # a run under 50 points was drawn raw, the others as a moving average
    fig = compare_figure([("short", short), ("long", long)])
    solid = [line for line in fig.axes[0].get_lines() if line.get_linewidth() == 2]
    assert len(solid) == 2
    for line, cols in zip(solid, (short, long)):
        assert np.allclose(line.get_ydata(), debiased_ema(cols["loss"], 0.6)[0], rtol=1e-6)
    assert "EMA 0.6" in fig._suptitle.get_text()


def api_run(path, config: dict, keys: dict, steps: int = 60) -> None:
    """A run written by the logging API: a loop's own keys, with a config to filter and group by."""
    import neurogen_tui as ngt

    with ngt.init(run_dir=path, config=config) as run:
        for step in range(1, steps + 1):
            run.log({k: f(step, config) for k, f in keys.items()}, step=step)


def test_render_draws_a_grid_of_the_keys_a_run_logged_where_the_seeds_are_missing(tmp_path, capsys):
    run = tmp_path / "own-keys"
    api_run(run, {"lr": 1e-3}, {"objective/nll": lambda s, c: 3.0 / s, "eval/acc": lambda s, c: s / 100,
                                "grad/norm": lambda s, c: 1.0 + s % 3})
    out = tmp_path / "grid.png"
    assert cli.main(["render", str(run), "-o", str(out)]) == 0
    assert has_content(out, (3000, 690)) and "60 steps, 3 metrics" in capsys.readouterr().out
    assert cli.main(["render", str(run), "-o", str(out), "--metrics", "^eval/"]) == 0
    assert "1 metrics" in capsys.readouterr().out
    for bad, said in ((["--metrics", "("], "not a regular expression"), (["--metrics", "nothing"], "no logged metric")):
        assert cli.main(["render", str(run), "-o", str(tmp_path / "bad.png"), *bad]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.png").exists()
    # --grid on a run of ours: its logged series (grad_norm, rss_mb...) a panel each, not the seed's panels
    from neurogen_tui.viz.compare import grid_figure, logged_metrics
    from neurogen_tui.run.reader import load_table

    name, table = load_table(run)
    fig = grid_figure(table.columns, name, logged_metrics(table.columns))
    assert sorted(ax.get_title() for ax in fig.axes) == ["eval/acc", "grad/norm", "objective/nll"]


def test_render_and_compare_read_a_tensorboard_logdir(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    for lr in (1, 2):
        writer = SummaryWriter(str(tmp_path / "tb" / f"lr{lr}"))
        for step in range(1, 41):
            writer.add_scalar("train/loss", 4.0 / (step * lr), step)
            writer.add_scalar("charts/sps", 100.0 + step, step)
        writer.close()
    out = tmp_path / "tb.png"
    assert cli.main(["render", str(tmp_path / "tb" / "lr1"), "-o", str(out)]) == 0
    assert has_content(out, None) and "40 steps, 2 metrics" in capsys.readouterr().out
    assert cli.main(["compare", str(tmp_path / "tb"), "-o", str(out)]) == 0  # a logdir of runs: each a line
    assert "2 runs" in capsys.readouterr().out


def test_compare_takes_a_directory_of_runs_with_the_workspaces_filter_and_grouping(tmp_path, capsys):
    from neurogen_tui.run.query import group_label, groups
    from neurogen_tui.cli.commands import compare_runs

    root = tmp_path / "sweep"
    for lr in (1e-3, 1e-2):
        for seed in (0, 1):
            api_run(root / f"lr{lr:g}-s{seed}", {"lr": lr, "seed": seed},
                    {"loss": lambda s, c: 4.0 - c["lr"] * 100 * s / 60 + c["seed"] * 0.05})
    (root / "notes").mkdir()  # not a run: left out
    out = tmp_path / "cmp.png"
    assert cli.main(["compare", str(root), "-o", str(out), "--filter", "lr>=1e-2"]) == 0
    assert "wrote" in capsys.readouterr().out and has_content(out)
    assert sorted(r["name"] for r in compare_runs([str(root)], "lr>=1e-2")) == ["lr0.01-s0", "lr0.01-s1"]
    assert cli.main(["compare", str(root), "-o", str(out), "--group", "seed"]) == 0
    assert "4 runs in 2 groups by seed" in capsys.readouterr().out
    chosen = compare_runs([str(root)], "")
    for run in chosen:
        run["columns"] = load_run(run["path"])[1].slice()
    grouped = [(group_label(v), [r["columns"] for r in m]) for v, m in groups(chosen, "seed").items()]
    fig = compare_figure([], groups=grouped)
    labels = sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert labels == ["lr=0.001 (mean of 2)", "lr=0.01 (mean of 2)"]
    edge = fig.axes[0].collections[0].get_paths()[0].vertices  # the band spans the seeds (0.05 apart) at every step
    last = edge[np.isclose(edge[:, 0], edge[:, 0].max())][:, 1]
    assert last.max() - last.min() == pytest.approx(0.05, abs=1e-4)
    for bad, said in ((["--filter", "lr>>1"], "--filter"), (["--filter", "lr>5"], "no run matches")):
        assert cli.main(["compare", str(root), "-o", str(tmp_path / "bad.png"), *bad]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()
