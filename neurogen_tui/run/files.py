"""One atomic-write helper used by every writer, strict JSON, and the append-only JSONL logs (written, trimmed, followed)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import IO, Callable


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None] | bytes) -> Path:
    """Write to a temporary file in the same directory, fsync, then rename over `path`.

    A reader (or a crash at any moment) sees either the old complete file or the new complete one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
        with os.fdopen(fd, "wb") as fh:
            if isinstance(write, (bytes, bytearray)):
                fh.write(write)
            else:
                write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def finite_or_none(obj):
    """Replace NaN and infinities by None, recursively: bare NaN is not JSON for strict readers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    return json.dumps(finite_or_none(obj), allow_nan=False, ensure_ascii=False, **kwargs)


def write_json(path: str | os.PathLike, obj, indent: int | None = None) -> Path:
    return atomic_write(path, dumps(obj, indent=indent).encode("utf-8"))


def jsonl_objects(data: bytes, base: int = 0):
    """(row, offset just past its line) for each JSON object on the complete lines of `data`
    (which starts at byte `base` of its file); blank, corrupt and non-object lines are skipped."""
    pos = base
    for line in data[:data.rfind(b"\n") + 1].split(b"\n")[:-1]:
        pos += len(line) + 1
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            yield row, pos


def read_jsonl(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """Complete JSON lines from byte `offset`, and the offset after the last complete line.

    A torn last line (a writer killed mid-append, or still writing) is left for the next read;
    a corrupt line in the middle is skipped.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    return [row for row, _ in jsonl_objects(data)], offset + data.rfind(b"\n") + 1


class JsonlWriter:
    """Appends one JSON object per line, each written whole and at once, so a crash loses at most
    the line being written.

    Where the disk refuses a line (full, over quota), the file is cut back to its last whole line
    and the lines wait in memory, at most `hold` of them (past that the oldest are dropped and
    counted), until a later write gets through: then they go out in order. `say(text, level)` is
    told once when the trouble starts and once when it is over. With hold=0 the error is raised."""

    RETRY_EVERY = 2.0  # seconds between tries while lines are held

    def __init__(self, path: str | os.PathLike, hold: int = 0, say: Callable[[str, str], None] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self.size = os.fstat(self._fd).st_size  # the file's length: where the next line starts
        self.hold, self.say = hold, say or (lambda text, level: None)
        self.held: deque[bytes] = deque()
        self.dropped = 0  # lines lost while held, in all
        self._retry_at = 0.0
        self._error = ""

    def _repair_tail(self) -> None:
        """Drop a torn last line left by a killed writer, so appended lines start on their own."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)

    def _put(self, line: bytes) -> int:
        start, done = self.size, 0
        try:
            while done < len(line):
                done += os.write(self._fd, line[done:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)  # never leave half a line behind
            raise
        self.size = start + len(line)
        return self.size

    def write(self, row: dict) -> int | None:
        """Append `row`; the file's length after it (the offset just past its line), or None where
        it is held (the disk refused it; it goes out with a later write)."""
        self.append(row)
        return None if self.held else self.size

    def append(self, row: dict) -> list[tuple[dict, int]]:
        """Append `row` (after any held lines): each row written now with the offset just past its
        line, oldest first (held rows come back parsed from their lines)."""
        line = (dumps(row) + "\n").encode("utf-8")
        if not self.held:
            try:
                return [(row, self._put(line))]
            except OSError as exc:
                if not self.hold:
                    raise
                self._trouble(exc)
        self._keep(line)
        return self._retry()

    def extend(self, rows: list[dict]) -> list[tuple[dict, int]]:
        """Append many rows in one write (a writer thread's batch): as append() for each."""
        if self.held or len(rows) < 2:
            return [pair for row in rows for pair in self.append(row)]
        lines = [(dumps(row) + "\n").encode("utf-8") for row in rows]
        start = self.size
        try:
            self._put(b"".join(lines))
        except OSError as exc:  # cut back whole (_put): each line is then held as append() holds it
            if not self.hold:
                raise
            self._trouble(exc)
            for line in lines:
                self._keep(line)
            return self._retry()
        out, end = [], start
        for row, line in zip(rows, lines):
            end += len(line)
            out.append((row, end))
        return out

    def _keep(self, line: bytes) -> None:
        if len(self.held) >= self.hold:
            self.held.popleft()
            self.dropped += 1
        self.held.append(line)

    def _trouble(self, exc: OSError) -> None:
        self._error = exc.strerror or str(exc)
        self._retry_at = time.monotonic() + self.RETRY_EVERY
        self.say(f"cannot write {self.path.name}: {self._error}; keeping up to {self.hold:,} lines in memory "
                 f"and trying again every {self.RETRY_EVERY:.0f}s", "error")

    def _retry(self) -> list[tuple[dict, int]]:
        """The held lines, written as far as the disk lets them (every RETRY_EVERY seconds)."""
        out: list[tuple[dict, int]] = []
        if not self.held or time.monotonic() < self._retry_at:
            return out
        while self.held:
            try:
                end = self._put(self.held[0])
            except OSError:
                self._retry_at = time.monotonic() + self.RETRY_EVERY
                return out
            out.append((json.loads(self.held.popleft()), end))
        lost = f"; {self.dropped:,} dropped while the disk refused them" if self.dropped else ""
        self.say(f"{self.path.name} is written again ({len(out):,} held lines written{lost})",
                 "warning" if self.dropped else "info")
        return out

    def close(self) -> None:
        if self.held:
            self._retry_at = 0.0
            self._retry()
        if self.held:
            self.say(f"{len(self.held):,} lines of {self.path.name} could not be written: {self._error}", "error")
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def _backwards(path: Path, enough: Callable[[bytes], bool], block: int = 1 << 20) -> tuple[bytes, int, int]:
    """The file's last bytes, read backwards a block at a time until `enough(chunk)` says so for
    a newly read chunk (the block, completed by the line it cut from the block after it):
    (the bytes read, cut at their last newline; where they start in the file; the offset after
    the file's last complete line)."""
    blocks: list[bytes] = []
    with open(path, "rb") as fh:
        pos = fh.seek(0, os.SEEK_END)
        after = b""  # the block after this one, up to and including its first newline
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step)
            blocks.append(data)
            if enough(data + after):
                break
            nl = data.find(b"\n")
            after = data[:nl + 1] if nl >= 0 else data + after
    data = b"".join(reversed(blocks))
    cut = data.rfind(b"\n") + 1
    return data[:cut], pos, pos + cut if cut or pos else 0


def tail_jsonl(path: str | os.PathLike, n: int) -> tuple[list[dict], int]:
    """The last `n` complete JSON objects of a JSONL file, reading only its end (a long run's
    samples.jsonl holds hundreds of thousands), and the offset after its last complete line; a
    torn last line and corrupt lines are skipped."""
    seen = [0]

    def enough(chunk: bytes) -> bool:
        seen[0] += chunk.count(b"\n")
        return seen[0] > n + 16

    try:
        data, start, end = _backwards(Path(path), enough, block=1 << 16)
    except FileNotFoundError:
        return [], 0
    data, _ = _whole_lines(data, start)
    keep = data.split(b"\n")[-(n + 17):]  # only the last lines are parsed (a block holds thousands)
    return [row for row, _ in jsonl_objects(b"\n".join(keep))][-n:], end


def _whole_lines(data: bytes, start: int) -> tuple[bytes, int]:
    """Bytes read from `start` of a file, less a first line that may begin before them."""
    if start == 0:
        return data, 0
    skip = data.find(b"\n") + 1
    return data[skip:], start + skip


def _step_of(line: bytes):
    try:
        row = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    return row.get("step") if isinstance(row, dict) else None


def _kept(step, last_step: int) -> bool:
    return isinstance(step, int) and not isinstance(step, bool) and step <= last_step


def cut_jsonl_after(path: str | os.PathLike, last_step: int) -> int:
    """Drop the rows after `last_step` from a JSONL file written in step order (a resumed run),
    reading only from its end back to the last row kept, then cutting the file there (a torn last
    line goes too). Returns the rows dropped."""
    path = Path(path)

    def reached(data: bytes) -> bool:  # a complete line (not the first: it may be cut) with a kept step
        return any(_kept(_step_of(line), last_step) for line in data.split(b"\n")[1:-1])

    try:
        data, start, _ = _backwards(path, reached)
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    rows = list(jsonl_objects(*_whole_lines(data, start)))
    kept = [i for i, (row, _) in enumerate(rows) if _kept(row.get("step"), last_step)]
    cut = rows[kept[-1]][1] if kept else 0  # the end of the last row kept
    dropped = sum(row.get("step") is not None for row, _ in rows[kept[-1] + 1 if kept else 0:])
    if cut < size:
        os.truncate(path, cut)
    return dropped


def trim_jsonl(path: str | os.PathLike, keep: Callable[[dict], bool]) -> int:
    """Atomically rewrite a JSONL file keeping only rows for which keep(row) is true; rows removed."""
    path = Path(path)
    if not path.exists():
        return 0
    rows, _ = read_jsonl(path)
    kept = [r for r in rows if keep(r)]
    removed = len(rows) - len(kept)
    if removed or path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        atomic_write(path, "".join(dumps(r) + "\n" for r in kept).encode("utf-8"))
    return removed


class TailedFile:
    """A JSONL file read incrementally as another process appends to it; a file that shrank or was
    replaced (a resumed run trims it atomically) starts over."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.ident: tuple[int, int] | None = None

    def mark_start(self) -> bool:
        """Take the file as it is now, to be read from its start by someone else (a bulk reader
        sets `offset` to what it read): False where it does not exist yet."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False
        self.ident, self.offset = (st.st_dev, st.st_ino), 0
        return True

    def _advance(self) -> tuple[int | None, bool]:
        """The file's size now (None: not there), and whether it was replaced or shrank since the
        last look (then reading starts over at 0)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None, False
        ident, restarted = (st.st_dev, st.st_ino), False
        if (self.ident is not None and ident != self.ident) or st.st_size < self.offset:
            self.offset, restarted = 0, True
        self.ident = ident
        return st.st_size, restarted

    def read(self) -> tuple[list[dict], bool]:
        """New complete rows, and whether the file was replaced (so earlier rows no longer hold)."""
        size, restarted = self._advance()
        if size is None or size == self.offset:
            return [], restarted
        rows, self.offset = read_jsonl(self.path, self.offset)
        return rows, restarted

    def read_bytes(self) -> tuple[bytes, int, bool]:
        """The new complete lines as bytes, the offset they start at, and whether the file was
        replaced (for a reader that parses them in bulk)."""
        size, restarted = self._advance()
        if size is None or size == self.offset:
            return b"", self.offset, restarted
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(size - self.offset)
        data, start = data[:data.rfind(b"\n") + 1], self.offset
        self.offset += len(data)
        return data, start, restarted
