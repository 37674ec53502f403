"""Messy shards: bad records are skipped and counted, never a crash; a finite dataset ends cleanly."""
import json

import zstandard

import neurogen_tui.train.data as data
from neurogen_tui.cli.entry import main
from neurogen_tui.train.data import DocumentStream, open_local
from neurogen_tui.run.files import read_jsonl


def messy_shard(path):
    good = json.dumps({"text": "A good document about the river. " * 20}).encode()
    lines = [
        good,
        b'{"text": "unterminated',                       # malformed JSON
        json.dumps({"meta": {"x": 1}}).encode(),         # record without text
        json.dumps({"text": 42}).encode(),                # non-string text
        json.dumps({"text": ""}).encode(),                # empty document
        b'{"text": "bad utf-8 \xff\xfe here"}',           # invalid UTF-8
        b"[1, 2, 3]",                                     # not an object
        json.dumps({"text": "x" * 5000}).encode(),        # oversized for the test's limit
        good,
    ]
    path.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n"))
    return path


def test_bad_records_are_skipped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_LINE_BYTES", 2000)
    shard = messy_shard(tmp_path / "messy.jsonl.zst")
    warnings = []
    docs = DocumentStream(lambda: open_local([str(shard)]), on_warning=warnings.append)
    texts = list(docs)
    assert len(texts) == 3  # two good documents and the invalid-UTF-8 one, decoded with U+FFFD
    assert any("\ufffd" in t for t in texts)
    assert docs.stats.skipped == 6 and docs.index == 9
    assert warnings and "skipped" in warnings[0]


def test_training_on_a_messy_finite_shard_ends_cleanly(tmp_path):
    shard = messy_shard(tmp_path / "messy.jsonl.zst")
    run = tmp_path / "run"
    code = main(["--headless", "--model", "tiny", "--data-files", str(shard), "--tokens-per-chunk", "512",
                 "--batch-size", "8", "--eval-iters", "1", "--run-dir", str(run)])
    assert code == 0  # the data ran out: a clean finish with a checkpoint, not a failure
    rows, _ = read_jsonl(run / "training_viz" / "metrics.jsonl")
    assert rows, "it trained on what there was"
    assert list((run / "checkpoints").glob("checkpoint_step_*.pt"))


def test_epochs_loop_a_small_dataset(tmp_path):
    shard = messy_shard(tmp_path / "messy.jsonl.zst")
    docs = DocumentStream(lambda: open_local([str(shard)]), epochs=3, on_warning=lambda m: None)
    assert len(list(docs)) == 3 * 4  # the 5000-char document is fine at the default line limit
    assert docs.epoch == 2
