"""Text sources (hub stream, local shards, bundled sample) as a stream of documents with a resumable
position; batches.py packs them into training blocks.

Every source goes through `datasets` with `streaming=True`, so a 100 GB directory of shards or the
627B-token SlimPajama starts at once. The position we save is (epoch, documents consumed) plus the
packer's leftover tokens: resuming skips exactly the documents already trained on.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import zstandard

from .batches import BatchStream
from .config import SAMPLE_DATASET, TrainingConfig
from .flags import ConfigError
from .validate import expand_files

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parents[1] / "assets"  # neurogen_tui/assets: the bundled sample
SAMPLE_TRAIN = ASSETS / "sample_train.jsonl.zst"
SAMPLE_VAL = ASSETS / "sample_val.jsonl.zst"

# File endings to the `datasets` builder that reads them (compression is inferred by fsspec).
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text", ".csv": "csv"}
_COMPRESSION = (".zst", ".gz", ".bz2", ".xz", ".lz4", ".zip")


class DataError(RuntimeError):
    """The data cannot be read; the message is one line meant for the user."""


def builder_for(path: str) -> str:
    name = Path(path).name.lower()
    for ext in _COMPRESSION:
        if name.endswith(ext):
            name = name[: -len(ext)]
    suffix = Path(name).suffix
    if suffix not in _BUILDERS:
        raise ConfigError(f"cannot read {path}: expected .jsonl[.zst|.gz], .json, .parquet or .txt")
    return _BUILDERS[suffix]


MAX_LINE_BYTES = 64 * 2**20  # a JSON line longer than this is skipped, not loaded into memory


def jsonl_records(files: list[str]):
    """Records of JSON-lines files (any compression fsspec infers), one shard per file.

    Unlike the `json` builder, which fails a whole file on one bad line, this yields a record with
    no text for a malformed line, a non-object, invalid UTF-8 that is not JSON, or an oversized
    line, so DocumentStream skips and counts it and training goes on."""
    import fsspec

    for path in files:
        with fsspec.open(path, "rb", compression="infer") as raw:
            fh = raw if hasattr(raw, "peek") else io.BufferedReader(raw)  # zstd readers lack readline(n)
            while True:
                line = fh.readline(MAX_LINE_BYTES + 1)
                if not line:
                    break
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    while (rest := fh.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                        pass  # drain the oversized line without holding it
                    yield {"text": None, "error": "oversized"}
                    continue
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8", errors="replace"))
                except ValueError:
                    yield {"text": None, "error": "malformed"}
                    continue
                yield record if isinstance(record, dict) else {"text": None, "error": "not an object"}


def open_local(files: list[str]):
    builders = {builder_for(f) for f in files}
    if len(builders) > 1:
        raise ConfigError(f"mixed file types in one data set: {', '.join(sorted(builders))}")
    import datasets

    builder = builders.pop()
    if builder == "json" and all(".jsonl" in Path(f).name.lower() for f in files):
        # still a streaming datasets.IterableDataset (skip, shuffle, split_dataset_by_node work),
        # read by our tolerant line reader, one shard per file
        return datasets.IterableDataset.from_generator(jsonl_records, gen_kwargs={"files": list(files)})
    kwargs = {"sample_by": "paragraph"} if builder == "text" else {}
    return datasets.load_dataset(builder, data_files=files, split="train", streaming=True, **kwargs)


def open_hub(name: str, split: str):
    import datasets

    try:
        return datasets.load_dataset(name, split=split, streaming=True)
    except ValueError:
        raise  # a missing split is the caller's business
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        raise DataError(
            f"cannot open dataset {name!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); check the network, "
            f"or train offline with --dataset sample or --data-files PATH") from exc


@dataclass
class DataStats:
    documents: int = 0
    skipped: int = 0
    retries: int = 0
    warnings: list[str] = field(default_factory=list)


class DocumentStream:
    """Yields document texts from one source, counting position, skipping bad records, retrying
    transient read errors with exponential backoff."""

    def __init__(self, opener: Callable[[], object], *, start: int = 0, epochs: int = 1, epoch: int = 0,
                 first: int = 0, retries: int = 5, backoff: float = 1.0, remote: bool = False,
                 stop_event: threading.Event | None = None, on_warning: Callable[[str], None] | None = None,
                 rank: int = 0, world_size: int = 1, by_shard: bool | None = None):
        self._opener = opener
        self.rank, self.world_size = rank, world_size
        # Data parallel, two ways. When the source's shards (files) divide among the ranks, each
        # rank opens only its own shards (datasets' split_dataset_by_node): on the hub, 8 ranks
        # download the data once between them, not 8 times. Otherwise each rank keeps documents
        # rank, rank + W, ... of the whole stream (split_dataset_by_node's "examples" strategy,
        # done here so `index` stays a position in the stream). `index` counts the documents of
        # this rank's own stream in the first mode, of the whole stream in the second; a resumed
        # run keeps the mode its checkpoint was written in (`by_shard`).
        self.by_shard = False
        if world_size > 1:
            self.shards = int(getattr(opener(), "n_shards", 1) or 1)
            self.by_shard = self.shards % world_size == 0 if by_shard is None else by_shard
            if self.by_shard and rank:
                first = 0  # the held-out documents open shard 0, which is rank 0's
        self.first = first  # documents held out at the start of every epoch (validation slice)
        self.index = max(start, first)  # documents consumed in the current epoch
        self.epoch = epoch
        self.epochs = epochs
        self.retries = retries
        self.backoff = backoff
        self.remote = remote
        self.stats = DataStats()
        self._stop = stop_event or threading.Event()
        self._warn = on_warning or (lambda msg: log.warning(msg))

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "by_shard": self.by_shard}

    def split_note(self) -> str:
        """How the ranks share the data, for the log."""
        w = self.world_size
        if self.by_shard:
            return f"data: each of {w} ranks reads its own {self.shards // w} of {self.shards} shards"
        return (f"data: {self.shards} shard(s) do not divide among {w} ranks; each rank reads the whole stream "
                f"and trains on every {w}th document")

    def _open_at(self, index: int) -> Iterator:
        ds = self._opener()
        if self.by_shard:
            from datasets.distributed import split_dataset_by_node

            ds = split_dataset_by_node(ds, rank=self.rank, world_size=self.world_size)
        return iter(ds.skip(index) if index else ds)

    def __iter__(self) -> Iterator[str]:
        while True:
            yield from self._one_epoch()
            if self._stop.is_set():
                return
            if self.epochs and self.epoch + 1 >= self.epochs:
                return
            self.epoch += 1
            self.index = self.first
            self._warn(f"data: starting epoch {self.epoch + 1}")

    def _one_epoch(self) -> Iterator[str]:
        failures = 0
        it = self._open_at(self.index)
        while True:
            try:
                record = next(it)
            except StopIteration:
                return
            except Exception as exc:
                if not self.remote or failures >= self.retries:
                    raise DataError(f"reading data failed at document {self.index}: "
                                    f"{type(exc).__name__}: {str(exc)[:200]}") from exc
                delay = self.backoff * 2 ** failures
                failures += 1
                self.stats.retries += 1
                self._warn(f"data: read error ({type(exc).__name__}), retry {failures}/{self.retries} in {delay:.0f}s")
                if self._stop.wait(delay):
                    return
                it = self._open_at(self.index)
                continue
            failures = 0
            self.index += 1
            if self.world_size > 1 and not self.by_shard and (self.index - 1 - self.first) % self.world_size != self.rank:
                continue  # another rank's document
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str) or not text.strip():
                self.stats.skipped += 1
                if self.stats.skipped in (1, 10, 100, 1000) or self.stats.skipped % 10000 == 0:
                    why = record.get("error", "empty or no text") if isinstance(record, dict) else "not a record"
                    self._warn(f"data: skipped {self.stats.skipped} document(s) so far "
                               f"(empty, malformed or without text; latest: {why})")
                continue
            self.stats.documents += 1
            yield text


# ---------------------------------------------------------------------------------------------
# Composing sources for a run


def train_files(cfg: TrainingConfig) -> list[str] | None:
    """The local files of the training data, or None for a hub dataset."""
    if cfg.data_files:
        return expand_files(cfg.data_files)
    if cfg.dataset == SAMPLE_DATASET:
        return [str(SAMPLE_TRAIN)]
    if not Path(cfg.dataset).exists():
        return None
    files = expand_files(str(Path(cfg.dataset) / "**" / "*")) if Path(cfg.dataset).is_dir() else [cfg.dataset]
    files = [f for f in files if _readable_ext(f)]
    if not files:
        raise ConfigError(f"--dataset {cfg.dataset}: no .jsonl/.parquet/.txt files found")
    return files


def train_opener(cfg: TrainingConfig) -> tuple[Callable[[], object], bool]:
    """A function that opens the training stream, and whether it is remote (retry on errors)."""
    files = train_files(cfg)
    if files is None:
        return (lambda: open_hub(cfg.dataset, "train")), True
    return (lambda: open_local(files)), False


def pass_tokens(files: list[str], tokenizer, sample: int = 1 << 18) -> int | None:
    """About how many tokens one pass over local files holds, without reading them through: their
    sizes (a compressed file's scaled by how much its first megabytes inflate), times the tokens per
    byte of the first documents. None where that cannot be told (parquet, an unsampled compression)."""
    total, ratios = 0.0, {}
    for path in files:
        kind = next((ext for ext in _COMPRESSION if path.lower().endswith(ext)), "")
        if kind and kind not in ratios:
            with open(path, "rb") as raw:
                reader = {".zst": lambda: zstandard.ZstdDecompressor().stream_reader(raw),
                          ".gz": lambda: gzip.GzipFile(fileobj=raw)}.get(kind)
                ratios[kind] = len(reader().read(1 << 22)) / max(1, raw.tell()) if reader else None
        if builder_for(path) == "parquet" or (kind and ratios[kind] is None):
            return None
        total += os.path.getsize(path) * (ratios[kind] if kind else 1.0)
    line_bytes = tokens = 0
    for record in open_local(files):
        text = record.get("text") if isinstance(record, dict) else None
        if isinstance(text, str):
            line_bytes += len(json.dumps(record, ensure_ascii=False).encode()) + 1
            tokens += len(tokenizer.encode(text)) + 1
        if line_bytes >= sample:
            break
    return int(total * tokens / line_bytes) if line_bytes else None


def _readable_ext(path: str) -> bool:
    try:
        builder_for(path)
        return True
    except ConfigError:
        return False


def short_data_note(cfg: TrainingConfig, tokenizer, world_tokens_per_step: int) -> str:
    """What to say at the start of a run whose local data will run out before --max-chunks (an
    estimate), or ""."""
    files = train_files(cfg)
    if not (cfg.epochs and cfg.max_chunks and files):
        return ""
    tokens = pass_tokens(files, tokenizer)
    steps = int(tokens * cfg.epochs / world_tokens_per_step) if tokens else None
    if steps is None or steps >= cfg.max_chunks:
        return ""
    return (f"data: about {tokens:,} tokens a pass (estimated from the files' sizes), so {cfg.epochs} pass(es) end "
            f"near step {steps:,} of the {cfg.max_chunks:,} asked for; --epochs 0 goes round the data until then")


def val_opener(cfg: TrainingConfig) -> Callable[[], object] | None:
    """The validation source, or None when a slice of the training stream must be held out."""
    if cfg.val_data_files:
        files = expand_files(cfg.val_data_files)
        return lambda: open_local(files)
    if cfg.data_files or Path(cfg.dataset).exists():
        return None
    if cfg.dataset == SAMPLE_DATASET:
        return lambda: open_local([str(SAMPLE_VAL)])
    try:
        ds = open_hub(cfg.dataset, "validation")
    except ValueError:  # the dataset has no validation split
        return None
    return lambda: ds


def collect_eval_batches(opener: Callable[[], object], tokenizer, cfg: TrainingConfig
                         ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """Fixed evaluation batches (so every evaluation sees the same tokens) and the documents used."""
    docs = DocumentStream(opener, epochs=1)
    stream = BatchStream(docs, tokenizer, cfg.seq_len, cfg.batch_size)
    batches = []
    while len(batches) < cfg.eval_iters:
        batch = stream.next_batch()
        if batch is None:
            break
        batches.append(batch)
    return batches, docs.index
