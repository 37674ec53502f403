"""The control channel of a live run: newline-delimited JSON over a Unix socket only its user can open.

Here: the protocol, where the socket lives, and the client. The server, and RunService (what a run
adds to itself: run.json and the server), are in server.py.

The process that trains a run serves <run-dir>/control.sock (mode 0600, and every connection's
peer uid is checked). Where that path is too long for a Unix socket (about 107 bytes) or the
filesystem has no sockets, it lives in a private 0700 directory ($XDG_RUNTIME_DIR/neurogen-tui or
/tmp/neurogen-tui-<uid>) instead; run.json records where.

Protocol: one JSON object per line each way, at most MAX_LINE bytes.

    {"id": 1, "cmd": "status"}      -> {"id": 1, "ok": true, "state": "running", "step": 120, ...}
    {"id": 2, "cmd": "pause"}       -> {"id": 2, "ok": true, "state": "paused", "step": 121}
    {"id": 3, "cmd": "resume"}      -> {"id": 3, "ok": true, "state": "running", ...}
    {"id": 4, "cmd": "checkpoint"}  -> {"id": 4, "ok": true, "path": ".../checkpoint_step_000130.pt", "step": 130}
    {"id": 5, "cmd": "draw"}        -> {"id": 5, "ok": true, "path": ".../training_latest.png"}
    {"id": 6, "cmd": "stop"}        -> {"id": 6, "ok": true, "state": "stopping", ...}
    {"id": 8, "cmd": "set", "settings": {"lr": "3e-4"}}
                                    -> {"id": 8, "ok": true, "step": 130, "changes": {"lr": [0.001, 0.0003]}}
        (values as text, read and checked exactly as the flags are; a refused one: "ok": false,
        "usage": true and the flag's one-line error, and the run is untouched)
    {"id": 9, "cmd": "prompt", "text": "temperature=0.8 Once upon"}
                                    -> {"id": 9, "ok": true, "step": 131, "prompt": "Once upon", "output": "..."}
    {"id": 7, "cmd": "subscribe"}   -> the status reply, then events until the process exits:
        {"event": "state", "state": ...}  {"event": "checkpoint", "step", "path"}
        {"event": "log", "level", "text"}  {"event": "dashboard", "path"}  {"event": "started", ...}
        {"event": "finished", "reason", "step", "checkpoint"}  {"event": "failed", "step", "error"}
        {"event": "status", ...} every STATUS_EVERY seconds, and {"event": "exit", "state"} last.

A request is answered once it has been carried out (pause: the trainer is waiting at a step
boundary; checkpoint: the file is on disk), or with "pending": true if that takes longer than
WAIT_LIMIT. Anything malformed (not JSON, not an object, unknown command, a line too long) gets
{"ok": false, "error": ...}; the server and the trainer carry on. Metrics and samples are not on
the channel: viewers read them from the run's files (as `watch` does), which also gives them the
history before they attached.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import stat
import struct
import threading
from pathlib import Path

from ..core.events import CheckpointSaved, LogMessage, RunFailed, RunFinished, RunStarted, StateChanged
from ..run.files import finite_or_none
from ..run.info import read_run_info
from ..run.layout import SOCKET_FILE

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 100  # bytes; sun_path holds 108 with its NUL, and a temporary name must fit too
MAX_LINE = 64 * 1024
MAX_CLIENTS = 16
IDLE_TIMEOUT = 300.0  # a connection that sends nothing for this long is closed (not subscribers)
FIRST_LINE_TIMEOUT = 10.0  # a connection that has not sent its first request by then is closed
WAIT_LIMIT = 120.0  # longest a request waits to be carried out before the reply says "pending"
REPLY_TIMEOUT = WAIT_LIMIT + 15.0  # clients wait a little longer than the server does
STATUS_EVERY = 5.0  # seconds between status events to subscribers (also finds dead peers)
SUBSCRIBER_BACKLOG = 1000  # events queued for one subscriber before it is dropped as too slow
COMMANDS = ("status", "pause", "resume", "checkpoint", "draw", "stop", "set", "prompt", "subscribe")


class ControlError(RuntimeError):
    """The control channel cannot be served or reached; the message is one line."""


# ---- where the socket lives -------------------------------------------------------------------------
def private_dir() -> Path:
    """A directory only this user can enter, for sockets whose run-dir path is too long."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        base = Path(runtime) / "neurogen-tui"
    else:
        base = Path(f"/tmp/neurogen-tui-{os.getuid()}")
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(base)
    except OSError as exc:
        raise ControlError(f"cannot create {base}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ControlError(f"{base} is not a private directory of this user; not putting a socket there")
    return base


def socket_candidates(run_dir: str | os.PathLike):
    """<run-dir>/control.sock when its path fits, then a private directory's <hash>.sock."""
    run_dir = Path(run_dir).resolve()
    own = run_dir / SOCKET_FILE
    if len(os.fsencode(own)) <= MAX_SOCKET_PATH:
        yield own
    yield private_dir() / f"{hashlib.sha1(os.fsencode(run_dir)).hexdigest()[:16]}.sock"


def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def bind_private(path: Path) -> socket.socket:
    """A listening socket at `path` that only this user can connect to. The socket is bound under a
    temporary name, made 0600, then renamed into place, so it is never reachable with wider rights.
    A dead server's socket is replaced; a live one is left alone (ControlError)."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ControlError(f"{path} exists and is not a socket")
        if _answers(path):
            raise ControlError(f"{path} is served by another live process")
        path.unlink()
    tmp = path.with_name(f".c{os.getpid()}")
    if len(os.fsencode(tmp)) > MAX_SOCKET_PATH + 7:
        raise ControlError(f"socket path too long: {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.lexists(tmp):
            tmp.unlink()
        sock.bind(str(tmp))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        sock.listen(MAX_CLIENTS)
    except OSError:
        sock.close()
        with_suppressed(lambda: tmp.unlink())
        raise
    return sock


def with_suppressed(fn) -> None:
    try:
        fn()
    except OSError:
        pass


def peer_uid(conn: socket.socket) -> int | None:
    """The uid of the process at the other end of `conn` (Linux SO_PEERCRED), else None."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    fmt = "3i"
    try:
        _pid, uid, _gid = struct.unpack(fmt, conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                               struct.calcsize(fmt)))
    except OSError:
        return None
    return uid


def encode(obj: dict) -> bytes:
    """One protocol line: strict JSON (a NaN loss becomes null), ASCII only."""
    return (json.dumps(finite_or_none(obj), ensure_ascii=True, allow_nan=False, default=str) + "\n").encode("ascii")


# ---- the client -------------------------------------------------------------------------------------
class ControlClient:
    """Talks to a run's control socket; every call opens its own connection (thread-safe)."""

    def __init__(self, path: str | os.PathLike, connect_timeout: float = 5.0):
        self.path = str(path)
        self.connect_timeout = connect_timeout
        self._ids = iter(range(1, 1 << 62))
        self._id_lock = threading.Lock()

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike) -> "ControlClient":
        info = read_run_info(run_dir)
        if not info or not info.get("socket"):
            raise ControlError(f"{run_dir}: no control socket recorded in run.json")
        return cls(info["socket"])

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.connect_timeout)
        try:
            s.connect(self.path)
        except OSError as exc:
            s.close()
            raise ControlError(f"cannot reach the run's control socket {self.path}: {exc.strerror or exc}") from None
        uid = peer_uid(s)
        if uid is not None and uid != os.getuid():  # someone else's process put a socket there
            s.close()
            raise ControlError(f"{self.path} is served by another user (uid {uid}); not talking to it")
        return s

    def _next_id(self) -> int:
        with self._id_lock:
            return next(self._ids)

    def request(self, cmd: str, timeout: float = REPLY_TIMEOUT, **fields) -> dict:
        """Send one request (with the command's fields: set's settings) and return its reply (ok
        true or false). Raises ControlError when the run cannot be reached or does not answer
        within `timeout`."""
        req_id = self._next_id()
        with self._connect() as s:
            s.settimeout(timeout)
            try:
                s.sendall(encode({**fields, "id": req_id, "cmd": cmd}))
                reader = s.makefile("rb")
                line = reader.readline(MAX_LINE + 1)
            except socket.timeout:
                raise ControlError(f"{cmd}: no answer within {timeout:.0f}s") from None
            except OSError as exc:
                raise ControlError(f"{cmd}: connection lost: {exc.strerror or exc}") from None
        return self._decode(line, cmd)

    @staticmethod
    def _decode(line: bytes, what: str) -> dict:
        if not line:
            raise ControlError(f"{what}: the run closed the connection (it may have just ended)")
        try:
            msg = json.loads(line)
        except ValueError:
            raise ControlError(f"{what}: unreadable answer from the run") from None
        if not isinstance(msg, dict):
            raise ControlError(f"{what}: unreadable answer from the run")
        return msg

    def subscribe(self, timeout: float = STATUS_EVERY * 3):
        """Yield the status reply, then each event, until the process closes the connection.
        Raises ControlError when the run cannot be reached or goes silent for `timeout`."""
        s = self._connect()
        try:
            s.settimeout(timeout)
            s.sendall(encode({"id": self._next_id(), "cmd": "subscribe"}))
            reader = s.makefile("rb")
            while True:
                try:
                    line = reader.readline(MAX_LINE + 1)
                except socket.timeout:
                    raise ControlError(f"the run went silent for {timeout:.0f}s") from None
                except OSError as exc:
                    raise ControlError(f"connection lost: {exc.strerror or exc}") from None
                if not line:
                    return
                yield self._decode(line, "subscribe")
        finally:
            s.close()


# ---- events as protocol lines, both ways ---------------------------------------------------------------
def event_message(event) -> dict | None:
    """An event as a subscriber line, or None for events that viewers read from the files."""
    if isinstance(event, StateChanged):
        return {"event": "state", "state": event.state}
    if isinstance(event, CheckpointSaved):
        return {"event": "checkpoint", "step": event.step, "path": event.path}
    if isinstance(event, LogMessage):
        return {"event": "log", "level": event.level, "text": event.text}
    if isinstance(event, RunStarted):
        return {"event": "started", "device": event.device, "device_name": event.device_name,
                "n_params": event.n_params, "start_step": event.start_step, "total_steps": event.total_steps,
                "resumed_from": event.resumed_from}
    if isinstance(event, RunFinished):
        return {"event": "finished", "reason": event.reason, "step": event.step, "checkpoint": event.checkpoint}
    if isinstance(event, RunFailed):
        # the traceback's end: a viewer shows its last frames (the run's log holds all of it)
        return {"event": "failed", "step": event.step, "error": event.error, "traceback": event.traceback[-8000:]}
    return None


def message_event(msg: dict):
    """A subscriber line back as the event it stands for (started, finished, failed), else None."""
    kind = msg.get("event")
    if kind == "started":
        return RunStarted(device=str(msg.get("device") or ""), device_name=str(msg.get("device_name") or ""),
                          n_params=int(msg.get("n_params") or 0), start_step=int(msg.get("start_step") or 0),
                          total_steps=msg.get("total_steps"), resumed_from=msg.get("resumed_from"))
    if kind == "finished":
        return RunFinished(step=int(msg.get("step") or 0), reason=str(msg.get("reason") or "finished"),
                           checkpoint=msg.get("checkpoint"))
    if kind == "failed":
        return RunFailed(step=int(msg.get("step") or 0), error=str(msg.get("error") or "unknown error"),
                         traceback=str(msg.get("traceback") or ""))
    return None
