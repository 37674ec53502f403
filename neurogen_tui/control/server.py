"""The control server: serves one run's control socket from daemon threads.

The protocol is described in protocol.py; what each request does, in commands.py. RunService, at
the end, is what a run adds to itself: run.json kept current (run/info.py's RunRecord) and this server. Each connection has its own thread (at most
MAX_CLIENTS): it reads request lines, answers each once carried out, and after "subscribe"
streams events. The trainer never waits for any of it: the bus subscriber only notes what
happened and queues it, and a subscriber that does not keep up is dropped.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import select
import socket
import threading
import time
from collections import deque
from pathlib import Path

from ..run.info import RunRecord
from .commands import RunCommands
from .protocol import (COMMANDS, FIRST_LINE_TIMEOUT, IDLE_TIMEOUT, MAX_CLIENTS, MAX_LINE, STATUS_EVERY, SUBSCRIBER_BACKLOG, ControlError,
                       bind_private, encode, peer_uid, socket_candidates, with_suppressed)

log = logging.getLogger(__name__)


PEER_CHECK = 0.5  # seconds between looks at whether a subscriber hung up


def _peer_closed(conn: socket.socket) -> bool:
    """The other end closed the connection (a subscriber sends nothing after subscribing)."""
    try:
        poller = select.poll()  # poll, not select: any file descriptor number
        poller.register(conn, select.POLLIN)
        if not poller.poll(0):
            return False  # nothing to read: still there
        return conn.recv(1, socket.MSG_PEEK) == b""  # readable: data (still there) or the end
    except OSError:
        return True


def close_gracefully(conn: socket.socket) -> None:
    """Close after the peer has had our last line: closing with unread input resets the connection,
    and the peer's recv() can then lose the error reply that explains why."""
    with_suppressed(lambda: conn.shutdown(socket.SHUT_WR))
    try:
        conn.settimeout(0.2)
        for _ in range(16):  # discard at most 1 MiB of whatever it was still sending
            if not conn.recv(65536):
                break
    except OSError:
        pass
    with_suppressed(conn.close)


class _Subscriber:
    """Events waiting for one subscribed connection. push() runs on the trainer thread: O(1)."""

    def __init__(self) -> None:
        self.items: deque[dict] = deque()
        self.ready = threading.Event()
        self.dropped = False

    def push(self, msg: dict) -> None:
        if len(self.items) >= SUBSCRIBER_BACKLOG:
            self.dropped = True
        else:
            self.items.append(msg)
        self.ready.set()


class ControlServer:
    """Serves one trainer's control socket from daemon threads; see the module docstring."""

    def __init__(self, commands: RunCommands, run_dir: str | os.PathLike):
        self.commands = commands
        commands.fan_out = self._fan_out
        self.run_dir = Path(run_dir)
        self.path: Path | None = None
        self._sock: socket.socket | None = None
        self._ident: tuple[int, int] | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._silent: dict[socket.socket, float] = {}  # connections yet to send a request: when they came
        self._subs: set[_Subscriber] = set()

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Path:
        errors = []
        candidates = socket_candidates(self.run_dir)
        while self._sock is None:
            try:
                candidate = next(candidates)
                self._sock = bind_private(candidate)
            except StopIteration:
                break
            except (OSError, ControlError) as exc:
                errors.append(str(getattr(exc, "strerror", None) or exc))
                continue
            self.path = candidate
            st = os.stat(candidate)
            self._ident = (st.st_dev, st.st_ino)
        if self._sock is None:
            raise ControlError("cannot serve a control socket (" + "; ".join(errors) + ")")
        self._sock.settimeout(0.5)
        threading.Thread(target=self._accept_loop, name="control-accept", daemon=True).start()
        log.info("control channel: %s", self.path)
        return self.path

    def close(self, final_state: str | None = None) -> None:
        """Tell subscribers the process is ending, close every connection, remove the socket."""
        if self._closed.is_set():
            return
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.push({"event": "exit", "state": final_state})
        deadline = time.monotonic() + 2.0
        while any(s.items for s in subs) and time.monotonic() < deadline:
            time.sleep(0.02)  # let the stream threads send the exit line
        self._closed.set()
        if self._sock is not None:
            with_suppressed(self._sock.close)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with_suppressed(lambda c=conn: c.shutdown(socket.SHUT_RDWR))
        if self.path is not None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._ident:  # never remove a successor's socket
                    self.path.unlink()
            except OSError:
                pass

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                time.sleep(0.1)  # EMFILE and the like: try again rather than stop serving
                continue
            with self._lock:
                if len(self._conns) >= MAX_CLIENTS:
                    self._make_room()
                full = len(self._conns) >= MAX_CLIENTS
                if not full:
                    self._conns.add(conn)
                    self._silent[conn] = time.monotonic()
            if full:
                self._reject(conn, "too many connections")
                continue
            threading.Thread(target=self._serve, args=(conn,), name="control-conn", daemon=True).start()

    def _make_room(self) -> None:
        """Every slot is taken: the connection that has waited longest without sending a request
        gives its slot to the new one (idle connections must not lock `ctl` out). Under the lock."""
        if self._silent:
            oldest = min(self._silent, key=self._silent.get)
            del self._silent[oldest]
            self._conns.discard(oldest)
            with_suppressed(lambda: oldest.shutdown(socket.SHUT_RDWR))

    def _reject(self, conn: socket.socket, error: str) -> None:
        conn.settimeout(1.0)
        with_suppressed(lambda: conn.sendall(encode({"id": None, "ok": False, "error": error})))
        threading.Thread(target=close_gracefully, args=(conn,), daemon=True).start()

    # ---- one connection -----------------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        try:
            uid = peer_uid(conn)
            if uid is not None and uid != os.getuid():
                log.warning("control: refused a connection from uid %d", uid)
                conn.settimeout(1.0)
                conn.sendall(encode({"id": None, "ok": False, "error": "permission denied"}))
                return
            conn.settimeout(FIRST_LINE_TIMEOUT)
            self._read_requests(conn)
        except OSError:
            pass  # the peer went away or timed out
        except Exception:  # a bug here must never reach the trainer
            log.exception("control: connection handler failed")
        finally:
            with self._lock:
                self._conns.discard(conn)
                self._silent.pop(conn, None)
            close_gracefully(conn)

    def _read_requests(self, conn: socket.socket) -> None:
        buf = b""
        while not self._closed.is_set():
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_LINE:
                    self._bad(conn, None, f"request longer than {MAX_LINE} bytes")
                    return  # the rest of that line cannot be told from the next request
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                continue
            line, buf = buf[:nl], buf[nl + 1:]
            if len(line) > MAX_LINE:
                self._bad(conn, None, f"request longer than {MAX_LINE} bytes")
                return
            if not line.strip():
                continue
            with self._lock:
                spoke = self._silent.pop(conn, None) is not None
            if spoke:
                conn.settimeout(IDLE_TIMEOUT)  # it spoke: it may keep its slot between requests
            reply, subscribe = self.handle_line(line)
            conn.sendall(encode(reply))
            if subscribe:
                self._stream(conn, subscribe)
                return

    def _bad(self, conn: socket.socket, req_id, error: str) -> None:
        log.warning("control: rejected a request: %s", error)
        conn.sendall(encode({"id": req_id, "ok": False, "error": error, "usage": True}))

    def handle_line(self, line: bytes) -> tuple[dict, _Subscriber | None]:
        """One request line to (reply, subscriber if the connection now streams events)."""
        try:
            req = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            return self._error(None, "bad request: not a JSON object on one line"), None
        if not isinstance(req, dict):
            return self._error(None, "bad request: expected a JSON object like {\"cmd\": \"status\"}"), None
        req_id = req.get("id")
        if not (req_id is None or isinstance(req_id, (int, str)) and len(str(req_id)) <= 64):
            req_id = None
        cmd = req.get("cmd")
        if cmd not in COMMANDS:
            shown = cmd if isinstance(cmd, str) and len(cmd) <= 40 else type(cmd).__name__
            return self._error(req_id, f"unknown command {shown!r} (one of: {', '.join(COMMANDS)})"), None
        try:
            if cmd == "subscribe":
                sub = _Subscriber()
                with self._lock:  # whoever subscribes after the start (or the end) still hears of it
                    for msg in self.commands.replay():
                        sub.push(msg)
                    self._subs.add(sub)
                self.commands.viewer(attached=True)
                return {"id": req_id, "ok": True, **self.commands.status()}, sub
            reply = self.commands.handle(cmd, req)
        except Exception as exc:
            log.exception("control: %s failed", cmd)
            return self._error(req_id, f"{cmd} failed: {type(exc).__name__}: {exc}"), None
        ok = "error" not in reply
        return {"id": req_id, "ok": ok, **reply}, None

    def _error(self, req_id, error: str) -> dict:
        log.warning("control: rejected a request: %s", error)
        return {"id": req_id, "ok": False, "error": error}

    def _stream(self, conn: socket.socket, sub: _Subscriber) -> None:
        conn.settimeout(STATUS_EVERY * 2)  # a peer that stops reading is dropped, not waited for
        try:
            quiet_since = time.monotonic()
            while not self._closed.is_set():
                sub.ready.wait(PEER_CHECK)
                if not sub.ready.is_set() and time.monotonic() - quiet_since < STATUS_EVERY:
                    if _peer_closed(conn):  # the viewer left: its timeline line is written now, not at the next status
                        return
                    continue
                quiet_since = time.monotonic()
                sub.ready.clear()
                if sub.dropped:
                    conn.sendall(encode({"event": "dropped", "error": "subscriber too slow; reconnect"}))
                    return
                batch = []
                while sub.items:
                    batch.append(sub.items.popleft())
                if not batch:
                    batch = [{"event": "status", **self.commands.status()}]
                conn.sendall(b"".join(encode(m) for m in batch))
                if batch[-1].get("event") == "exit":
                    return
        finally:
            with self._lock:
                self._subs.discard(sub)
            self.commands.viewer(attached=False)

    def _fan_out(self, msg: dict | None) -> None:
        if msg is None:
            return
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.push(msg)


class RunService:
    """What build_trainer adds to a run: run.json kept current, and the control server. close()
    (from RunParts.close, after the final exports) marks run.json's final state, then ends the
    server; an interpreter exit without close() marks the run failed."""

    def __init__(self, record, server):
        self.record, self.server = record, server
        atexit.register(self._at_exit)

    @classmethod
    def start(cls, cfg, trainer, bus, viz=None) -> "RunService":
        """Our trainer's: its config is the run's config."""
        return cls.serve(cfg.run_dir, cfg.display_name, cfg.max_chunks, cfg.checkpoint_dict(), trainer, bus, viz)

    @classmethod
    def serve(cls, run_dir, run_name: str, total_steps: int | None, config: dict, trainer, bus, viz=None,
              writer: str = "trainer") -> "RunService":
        """Any writer's: `trainer` is what the requests act on (our Trainer, or the logging API's
        loop control, which offers the same methods and says what it supports)."""
        commands = RunCommands(trainer, viz, run_dir)
        server = ControlServer(commands, run_dir)
        try:
            server.start()
        except (ControlError, OSError) as exc:
            server = None
            log.warning("control channel unavailable, the run goes on without it: %s", exc)
        else:
            bus.subscribe(commands.on_event)
            if viz is not None:
                viz.add_listener(commands.on_viz)
        record = RunRecord(run_dir, run_name, total_steps, config, socket_path=str(server.path) if server else None,
                           writer=writer)
        bus.subscribe(record)
        return cls(record, server)

    def close(self, error: str | None = None) -> None:
        atexit.unregister(self._at_exit)
        state = self.record.close(error)
        if self.server is not None:
            self.server.close(final_state=state)

    def _at_exit(self) -> None:
        self.close(error="the process exited before the trainer reported a result")
