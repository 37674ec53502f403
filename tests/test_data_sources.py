"""Local shards in SlimPajama's formats through the real `datasets` streaming path."""
import gzip
import json

import pytest

from neurogen_tui.train.config import TrainingConfig
from neurogen_tui.train.data import (SAMPLE_TRAIN, SAMPLE_VAL, DataError, DocumentStream, builder_for, open_hub,
                               open_local, train_opener, val_opener)


def first_texts(ds, n=3):
    out = []
    for rec in ds:
        out.append(rec["text"])
        if len(out) == n:
            break
    return out


def test_jsonl_zst_shard_reads_through_datasets(shard):
    texts = first_texts(open_local([str(shard)]))
    assert texts[0].startswith("Document number 0:")
    assert texts[2].startswith("Document number 2:")


def test_bundled_sample_is_slimpajama_format_and_small():
    assert SAMPLE_TRAIN.stat().st_size < 2_000_000
    rec = next(iter(open_local([str(SAMPLE_TRAIN)])))
    assert isinstance(rec["text"], str) and rec["text"]
    assert rec["meta"]["redpajama_set_name"].startswith("RedPajama")
    assert next(iter(open_local([str(SAMPLE_VAL)])))["text"]


def test_gz_parquet_and_txt_shards(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    gz = tmp_path / "a.json.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(json.dumps({"text": "gzipped doc"}) + "\n")
    assert first_texts(open_local([str(gz)]), 1) == ["gzipped doc"]
    pq.write_table(pa.table({"text": ["parquet doc", "second"]}), tmp_path / "b.parquet")
    assert first_texts(open_local([str(tmp_path / "b.parquet")]), 2) == ["parquet doc", "second"]
    (tmp_path / "c.txt").write_text("first paragraph\nstill first\n\nsecond paragraph\n")
    texts = first_texts(open_local([str(tmp_path / "c.txt")]), 2)
    assert texts[0].startswith("first paragraph") and "second paragraph" in texts[1]


def test_builder_for_strips_compression_suffixes():
    assert builder_for("x/train-00001.jsonl.zst") == "json"
    assert builder_for("x.json.gz") == "json"
    assert builder_for("x.parquet") == "parquet"
    with pytest.raises(Exception, match="expected"):
        builder_for("x.bin")


def test_document_stream_resumes_at_saved_position(shard):
    docs = DocumentStream(lambda: open_local([str(shard)]))
    it = iter(docs)
    seen = [next(it) for _ in range(7)]
    state = docs.state()
    resumed = DocumentStream(lambda: open_local([str(shard)]), start=state["index"])
    nxt = next(iter(resumed))
    assert nxt.startswith("Document number 7:")
    assert nxt not in seen


def test_local_shards_without_validation_hold_out_a_training_slice(shard):
    cfg = TrainingConfig(data_files=str(shard))
    assert val_opener(cfg) is None  # evaluation uses a held-out slice of the training stream
    opener, remote = train_opener(cfg)
    assert remote is False


def test_unreachable_hub_says_so_in_one_line():
    with pytest.raises(DataError) as exc:
        open_hub("cerebras/SlimPajama-627B", "train")  # HF_HUB_OFFLINE=1 in conftest
    msg = str(exc.value)
    assert "\n" not in msg
    assert "cannot open dataset" in msg and "--dataset sample" in msg


class FlakyDataset:
    """Fails twice mid-stream with a network-like error, then reads fine (a real hub hiccup)."""

    def __init__(self, records, failures, offset=0):
        self.records, self.failures, self.offset = records, failures, offset

    def skip(self, n):
        return FlakyDataset(self.records, self.failures, self.offset + n)

    def __iter__(self):
        for i, rec in enumerate(self.records[self.offset:], start=self.offset):
            if i == 2 and self.failures:
                self.failures.pop()
                raise ConnectionError("connection reset by peer")
            yield rec


def test_transient_remote_errors_are_retried_with_backoff():
    records = [{"text": f"doc {i}"} for i in range(6)]
    failures = [1, 1]
    warnings = []
    docs = DocumentStream(lambda: FlakyDataset(records, failures), remote=True, backoff=0.01,
                          on_warning=warnings.append)
    assert list(docs) == [f"doc {i}" for i in range(6)]  # nothing lost, nothing repeated
    assert docs.stats.retries == 2
    assert any("retry 1/5" in w for w in warnings)


def test_remote_errors_give_up_after_the_last_retry():
    records = [{"text": f"doc {i}"} for i in range(6)]
    docs = DocumentStream(lambda: FlakyDataset(records, [1] * 10), remote=True, backoff=0.001, retries=3,
                          on_warning=lambda m: None)
    with pytest.raises(DataError, match="reading data failed at document 2"):
        list(docs)
