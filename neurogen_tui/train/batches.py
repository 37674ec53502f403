"""Documents packed into training blocks, and the blocks into micro-batches.

Blocks are seq_len + 1 tokens cut from the documents joined with an end-of-text separator; two
consecutive blocks share one token, so every token but the first is a target once and only a final
partial block is dropped. Two orders:

  shuffled    (the default, --shuffle-buffer TOKENS) the stream is read a window at a time and the
              window's blocks are handed out in a random order, so a step's micro-batch holds blocks
              from many documents, or from all over a long book, as nanoGPT's random offsets do
              (which need the whole data set indexed first; a window needs only its own tokens)
  sequential  (--shuffle-buffer 0, and checkpoints written before shuffling) the stream's own order

Either way the saved position is exact and small: the document stream's position and, in the
stream's order, the packer's leftover tokens (fewer than a block); shuffled, how far into the
document being read, and which window and how far into it.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
import torch


class Packer:
    """Concatenates token arrays with an end-of-text separator and cuts blocks of seq_len + 1."""

    def __init__(self, seq_len: int, eot_id: int, leftover: np.ndarray | None = None):
        self.seq_len = seq_len
        self._eot = np.asarray([eot_id], dtype=np.int32)
        self._pieces: deque[np.ndarray] = deque()
        self._size = 0
        if leftover is not None and len(leftover):
            self._push(np.asarray(leftover))

    def _push(self, arr: np.ndarray) -> None:
        if len(arr):
            self._pieces.append(arr)
            self._size += len(arr)

    def add(self, ids: np.ndarray) -> None:
        self._push(ids)
        self._push(self._eot)

    def __len__(self) -> int:
        return self._size

    def take(self) -> np.ndarray | None:
        """One block of seq_len + 1 tokens (int64), or None when fewer are buffered."""
        need = self.seq_len + 1
        if self._size < need:
            return None
        out = np.empty(need, dtype=np.int64)
        filled, consumed = 0, 0
        for piece in self._pieces:
            n = min(len(piece), need - filled)
            out[filled:filled + n] = piece[:n]
            filled += n
            if filled == need:
                break
        # consume seq_len tokens: the last token of this block starts the next one
        while consumed < self.seq_len:
            piece = self._pieces[0]
            n = min(len(piece), self.seq_len - consumed)
            if n == len(piece):
                self._pieces.popleft()
            else:
                self._pieces[0] = piece[n:]
            consumed += n
        self._size -= self.seq_len
        return out

    def give_back(self, block: np.ndarray) -> None:
        """Put a block taken last back in front (its last token is already the next one's first)."""
        self._pieces.appendleft(np.asarray(block[:-1], dtype=np.int32))
        self._size += len(block) - 1

    def leftover(self) -> np.ndarray:
        if not self._pieces:
            return np.empty(0, dtype=np.int32)
        return np.concatenate([p.astype(np.int32) for p in self._pieces])


class SequentialBlocks:
    """Blocks in the stream's own order."""

    def __init__(self, docs, tokenizer, seq_len: int, leftover: np.ndarray | None = None):
        self.docs, self.tokenizer = docs, tokenizer
        self.packer = Packer(seq_len, tokenizer.eot_id, leftover)
        self._texts = iter(docs)

    def next_block(self) -> np.ndarray | None:
        while (block := self.packer.take()) is None:
            try:
                text = next(self._texts)
            except StopIteration:
                return None
            self.packer.add(self.tokenizer.encode(text))
        return block

    def give_back(self, blocks: list[np.ndarray]) -> None:
        """Blocks taken but not trained on, oldest first: the position is as before they were taken."""
        for block in reversed(blocks):
            self.packer.give_back(block)

    def state(self) -> dict:
        return {**self.docs.state(), "leftover": torch.from_numpy(self.packer.leftover())}


class ShuffledBlocks:
    """Blocks in a random order, one window of the stream at a time.

    A window is the stream's next `window` tokens (a long document runs on into the next window; a
    window ends with its epoch), cut into blocks as the packer cuts them; its blocks are handed out in
    a permutation seeded by (seed, rank, window number), so an epoch's blocks are each trained once.

    The saved position is small: where the window started (the document then being read: its place
    in the stream and how many of its tokens came before; and the one token a window shares with the
    one before it), the window's number, how many of its blocks were handed out, and the blocks given
    back (a step that did not happen). Resuming reads the window again from there (the same documents
    give the same tokens) and skips what was handed out."""

    def __init__(self, docs, tokenizer, seq_len: int, window: int, seed: int, rank: int = 0,
                 state: dict | None = None):
        self.docs, self.tokenizer, self.seq_len = docs, tokenizer, seq_len
        self.window = window
        self._per_window = max(1, window // seq_len)  # blocks of a full window
        self._seed = (seed, rank)
        self._eot = np.asarray([tokenizer.eot_id], np.int32)
        self._texts = iter(docs)
        state = state or {}
        shuffle = state.get("shuffle", {})
        self._number = int(shuffle.get("window", 0))  # the window handed out now
        carry = state.get("leftover")
        self._carry = carry.numpy().astype(np.int32) if carry is not None else np.empty(0, np.int32)
        self._doc, self._at, self._doc_pos = np.empty(0, np.int32), 0, docs.state()  # the document being read
        self._skip = int(shuffle.get("offset", 0))  # tokens of the first document read before (a resumed run)
        self._epoch = shuffle.get("after_epoch")  # the epoch of the tokens before this window
        self._start = self._mark()
        self._tokens, self._order, self._taken, self._read = np.empty(0, np.int32), np.empty(0, np.int64), 0, False
        given = state.get("given_back")
        self._given: list[np.ndarray] = [row.numpy().astype(np.int64) for row in given] if given is not None else []
        if shuffle:  # a resumed run: the window it was in, and as far into it
            self._fill()
            self._taken = int(shuffle.get("taken", 0))

    def _mark(self) -> dict:
        return {"position": {**self._doc_pos}, "offset": self._at if len(self._doc) else self._skip,
                "carry": self._carry, "epoch": self._epoch}

    def _next_epoch(self) -> int | None:
        """The epoch of the next token (the next document read in if this one is done); None at the end."""
        if self._at >= len(self._doc):
            try:
                text = next(self._texts)
            except StopIteration:
                return None
            self._doc_pos = {**self.docs.state(), "index": self.docs.index - 1}  # this document's own place
            self._doc = np.concatenate([np.asarray(self.tokenizer.encode(text), dtype=np.int32), self._eot])
            self._at, self._skip = min(self._skip, len(self._doc)), 0
        return self._doc_pos["epoch"]

    def _take(self, n: int, epoch: int | None) -> np.ndarray:
        """The stream's next `n` tokens, documents joined by end-of-text; fewer at the end of the
        stream or of `epoch` (a window stays in one epoch: its blocks are that epoch's, each once)."""
        parts = []
        while n > 0 and epoch is not None and self._next_epoch() == epoch:
            k = min(n, len(self._doc) - self._at)
            parts.append(self._doc[self._at:self._at + k])
            self._at += k
            n -= k
        return np.concatenate(parts) if parts else np.empty(0, np.int32)

    def _fill(self) -> None:
        """Read window _number: its blocks share their first token with the window before, except
        that each epoch's blocks are cut at an offset of their own (its first 0 to seq_len - 1 tokens
        left out, and the tokens short of a block at the end of the one before): a second pass over
        a small data set trains on other blocks than the first, as random offsets would."""
        epoch = self._next_epoch()
        self._start = self._mark()
        if epoch is not None and epoch != self._epoch:
            self._carry = np.empty(0, np.int32)
            self._take(int(np.random.default_rng([*self._seed, epoch, 0x5EED]).integers(self.seq_len)), epoch)
        self._epoch = epoch
        head = self._carry if len(self._carry) else self._take(1, epoch)
        tokens = np.concatenate([head, self._take(self._per_window * self.seq_len, epoch)])
        blocks = (len(tokens) - 1) // self.seq_len if len(tokens) > self.seq_len else 0
        # what follows the last block starts the next window: its one shared token (at the end of an
        # epoch, the tokens short of a block, which the next epoch's own cut leaves out)
        self._tokens, self._carry = tokens, tokens[blocks * self.seq_len:]
        self._order = np.random.default_rng([*self._seed, self._number]).permutation(blocks)
        self._taken, self._read = 0, True

    def next_block(self) -> np.ndarray | None:
        if self._given:
            return self._given.pop()
        if not self._read:
            self._fill()
        while self._taken >= len(self._order):
            if not len(self._order):
                return None  # a window without a block: the stream is done
            self._number += 1
            self._fill()
        start = int(self._order[self._taken]) * self.seq_len
        self._taken += 1
        return self._tokens[start:start + self.seq_len + 1].astype(np.int64)

    def give_back(self, blocks: list[np.ndarray]) -> None:
        """Blocks taken but not trained on, oldest first: they come out again first, in that order."""
        self._given.extend(reversed(blocks))

    def state(self) -> dict:
        start = self._start
        given = np.stack(self._given) if self._given else np.empty((0, self.seq_len + 1), np.int64)
        return {**start["position"], "leftover": torch.from_numpy(np.asarray(start["carry"])),
                "shuffle": {"window": self._number, "taken": self._taken, "tokens": self.window,
                            "offset": start["offset"], "after_epoch": start["epoch"]},
                "given_back": torch.from_numpy(given)}


class BatchStream:
    """Micro-batches (x, y) of shape (batch_size, seq_len) from a data.DocumentStream: in the
    stream's order, or (window > 0) shuffled a window of that many tokens at a time."""

    def __init__(self, docs, tokenizer, seq_len: int, batch_size: int, leftover: np.ndarray | None = None,
                 window: int = 0, seed: int = 0, rank: int = 0, state: dict | None = None):
        self.docs = docs
        self.batch_size = batch_size
        if window:
            self.blocks = ShuffledBlocks(docs, tokenizer, seq_len, window, seed, rank, state)
        else:
            self.blocks = SequentialBlocks(docs, tokenizer, seq_len, leftover)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        blocks = []
        while len(blocks) < self.batch_size:
            block = self.blocks.next_block()
            if block is None:
                self.blocks.give_back(blocks)  # what was taken goes back: the saved position stays exact
                return None
            blocks.append(block)
        data = torch.from_numpy(np.stack(blocks))
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def unread(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Give back batches taken but not trained on, oldest first, so state() is as before they
        were taken."""
        blocks = [torch.cat([x, y[:, -1:]], dim=1).numpy() for x, y in batches]
        self.blocks.give_back([row for rows in blocks for row in rows])

    def state(self) -> dict:
        return self.blocks.state()


class StepBatches:
    """The batches the training loop reads: one optimizer step's micro-batches can be taken ahead,
    so every rank knows it has data before any rank starts the step (a rank that ran dry mid-step
    would leave the others waiting in the gradient all-reduce), and given back when the step does
    not happen (a pause, a stop), leaving the saved position exact."""

    def __init__(self, stream):
        self.stream = stream
        self._ready: list = []
        self.seconds = 0.0  # spent reading batches since the last take_seconds(): the data pipeline's share

    def take_seconds(self) -> float:
        spent, self.seconds = self.seconds, 0.0
        return spent

    def fill(self, n: int) -> bool:
        started = time.perf_counter()
        try:
            while len(self._ready) < n:
                batch = self.stream.next_batch()
                if batch is None:
                    return False
                self._ready.append(batch)
            return True
        finally:
            self.seconds += time.perf_counter() - started

    def give_back(self) -> None:
        self.stream.unread(self._ready)
        self._ready = []

    def next_batch(self):
        if self._ready:
            return self._ready.pop(0)
        started = time.perf_counter()
        batch = self.stream.next_batch()
        self.seconds += time.perf_counter() - started
        return batch

    def state(self) -> dict:
        return self.stream.state()
