"""Documents packed into training blocks, and the blocks into micro-batches: the packer keeps the
tokens between blocks so the saved position (documents consumed plus the leftover tokens) is exact."""
from __future__ import annotations

from collections import deque

import numpy as np
import torch


class Packer:
    """Concatenates token arrays with an end-of-text separator and cuts blocks of seq_len + 1.

    Consecutive blocks overlap by one token, so every token (but the very first) is a target once;
    only the final partial block is ever dropped.
    """

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

    def leftover(self) -> np.ndarray:
        if not self._pieces:
            return np.empty(0, dtype=np.int32)
        return np.concatenate([p.astype(np.int32) for p in self._pieces])


class BatchStream:
    """Micro-batches (x, y) of shape (batch_size, seq_len) from a data.DocumentStream through a Packer."""

    def __init__(self, docs, tokenizer, seq_len: int, batch_size: int,
                 leftover: np.ndarray | None = None):
        self.docs = docs
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.packer = Packer(seq_len, tokenizer.eot_id, leftover)
        self._texts = iter(docs)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        blocks = []
        while len(blocks) < self.batch_size:
            block = self.packer.take()
            if block is not None:
                blocks.append(block)
                continue
            try:
                text = next(self._texts)
            except StopIteration:
                # hand back what we took so the saved position stays exact
                for b in reversed(blocks):
                    self.packer._pieces.appendleft(b[:-1].astype(np.int32))
                    self.packer._size += len(b) - 1
                return None
            self.packer.add(self.tokenizer.encode(text))
        data = torch.from_numpy(np.stack(blocks))
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def unread(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Give back batches taken but not trained on, newest last, so state() is as before
        they were taken (a block's last token is the next block's first, so x holds the rest)."""
        for x, _ in reversed(batches):
            for row in reversed(x):
                self.packer._pieces.appendleft(row.numpy().astype(np.int32))
                self.packer._size += len(row)

    def state(self) -> dict:
        return {**self.docs.state(), "leftover": torch.from_numpy(self.packer.leftover())}


class StepBatches:
    """The batches the training loop reads: one optimizer step's micro-batches can be taken ahead,
    so every rank knows it has data before any rank starts the step (a rank that ran dry mid-step
    would leave the others waiting in the gradient all-reduce), and given back when the step does
    not happen (a pause, a stop), leaving the saved position exact."""

    def __init__(self, stream):
        self.stream = stream
        self._ready: list = []

    def fill(self, n: int) -> bool:
        while len(self._ready) < n:
            batch = self.stream.next_batch()
            if batch is None:
                return False
            self._ready.append(batch)
        return True

    def give_back(self) -> None:
        self.stream.unread(self._ready)
        self._ready = []

    def next_batch(self):
        return self._ready.pop(0) if self._ready else self.stream.next_batch()

    def state(self) -> dict:
        return self.stream.state()
