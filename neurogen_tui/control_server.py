"""The control server: serves one trainer's control socket from daemon threads.

The protocol is described in control.py. Each connection has its own thread (at most
MAX_CLIENTS): it reads request lines, answers each once carried out, and after "subscribe"
streams events. The trainer never waits for any of it: the bus subscriber only notes what
happened and queues it, and a subscriber that does not keep up is dropped.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from pathlib import Path

from .control import (COMMANDS, IDLE_TIMEOUT, MAX_CLIENTS, MAX_LINE, STATUS_EVERY, SUBSCRIBER_BACKLOG, WAIT_LIMIT,
                      ControlError, bind_private, encode, peer_uid, socket_candidates, with_suppressed)
from .events import (CheckpointSaved, LogMessage, RunFailed, RunFinished, RunStarted, StateChanged,
                     TrainingMetrics)

log = logging.getLogger(__name__)



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


def _event_message(event) -> dict | None:
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

    def __init__(self, trainer, bus, viz=None, run_dir: str | os.PathLike | None = None):
        self.trainer, self.viz = trainer, viz
        self.run_dir = Path(run_dir if run_dir is not None else trainer.cfg.run_dir)
        self.path: Path | None = None
        self._sock: socket.socket | None = None
        self._ident: tuple[int, int] | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._subs: set[_Subscriber] = set()
        self._cond = threading.Condition()
        self._step, self._loss = getattr(trainer, "step", 0), None
        self._checkpoints, self._last_checkpoint = 0, None  # (step, path)
        self._dashboards, self._last_dashboard, self._dashboard_error = 0, None, None
        self._ended: dict | None = None
        self._started: dict | None = None  # the run's "started" event, replayed to later subscribers
        self._bus = bus
        bus.subscribe(self._on_event)
        if viz is not None and hasattr(viz, "add_listener"):
            viz.add_listener(self._on_viz)

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
        self._bus.unsubscribe(self._on_event)
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
                full = len(self._conns) >= MAX_CLIENTS
                if not full:
                    self._conns.add(conn)
            if full:
                self._reject(conn, "too many connections")
                continue
            threading.Thread(target=self._serve, args=(conn,), name="control-conn", daemon=True).start()

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
            conn.settimeout(IDLE_TIMEOUT)
            self._read_requests(conn)
        except OSError:
            pass  # the peer went away or timed out
        except Exception:  # a bug here must never reach the trainer
            log.exception("control: connection handler failed")
        finally:
            with self._lock:
                self._conns.discard(conn)
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
            reply, subscribe = self.handle_line(line)
            conn.sendall(encode(reply))
            if subscribe:
                self._stream(conn, subscribe)
                return

    def _bad(self, conn: socket.socket, req_id, error: str) -> None:
        log.warning("control: rejected a request: %s", error)
        conn.sendall(encode({"id": req_id, "ok": False, "error": error}))

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
                    for msg in (self._started, self._ended):
                        if msg is not None:
                            sub.push(msg)
                    self._subs.add(sub)
                return {"id": req_id, "ok": True, **self.status()}, sub
            reply = getattr(self, f"do_{cmd}")()
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
            while not self._closed.is_set():
                sub.ready.wait(STATUS_EVERY)
                sub.ready.clear()
                if sub.dropped:
                    conn.sendall(encode({"event": "dropped", "error": "subscriber too slow; reconnect"}))
                    return
                batch = []
                while sub.items:
                    batch.append(sub.items.popleft())
                if not batch:
                    batch = [{"event": "status", **self.status()}]
                conn.sendall(b"".join(encode(m) for m in batch))
                if batch[-1].get("event") == "exit":
                    return
        finally:
            with self._lock:
                self._subs.discard(sub)

    # ---- what the trainer did ------------------------------------------------------------------
    def _on_event(self, event) -> None:
        """Bus subscriber, on the trainer thread: note the event and queue it for subscribers."""
        if isinstance(event, TrainingMetrics):
            self._step, self._loss = event.step, event.loss
            return
        with self._cond:
            if isinstance(event, CheckpointSaved):
                self._checkpoints += 1
                self._last_checkpoint = (event.step, event.path)
            elif isinstance(event, (RunFinished, RunFailed)):
                self._ended = _event_message(event)
            elif isinstance(event, RunStarted):
                self._started = _event_message(event)
            self._cond.notify_all()
        self._fan_out(_event_message(event))

    def _on_viz(self, kind: str, detail: str) -> None:
        """VisualizationManager listener, on its dispatcher thread."""
        with self._cond:
            if kind == "dashboard" and str(detail).endswith("training_latest.png"):
                self._dashboards += 1
                self._last_dashboard = str(detail)
            elif kind == "error":
                self._dashboard_error = str(detail)
            self._cond.notify_all()
        if kind == "dashboard":
            self._fan_out({"event": "dashboard", "path": str(detail)})

    def _fan_out(self, msg: dict | None) -> None:
        if msg is None:
            return
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.push(msg)

    def _wait(self, predicate, timeout: float = WAIT_LIMIT) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def _finished(self) -> bool:
        return self._ended is not None or self.trainer.state in ("finished", "failed")

    # ---- the commands -----------------------------------------------------------------------------
    def status(self) -> dict:
        t = self.trainer
        ckpt = self._last_checkpoint
        return {"state": t.state, "paused": t.paused, "stop_requested": t.stop_requested,
                "step": max(self._step, getattr(t, "step", 0)), "loss": self._loss, "pid": os.getpid(),
                "run_dir": str(self.run_dir.resolve()),
                "last_checkpoint": ckpt[1] if ckpt else getattr(t, "last_checkpoint", None)}

    def do_status(self) -> dict:
        return self.status()

    def _refuse_if_over(self, what: str) -> dict | None:
        if self._finished():
            return {"error": f"the run has ended; nothing to {what}"}
        if self.trainer.stop_requested:
            return {"error": f"the run is stopping; cannot {what}"}
        return None

    def do_pause(self) -> dict:
        t = self.trainer
        refused = self._refuse_if_over("pause")
        if refused:
            return refused
        t.pause()
        done = self._wait(lambda: t.state == "paused" or not t.paused or self._finished())
        if t.state == "paused":
            return {"state": "paused", "step": t.step}
        if done and not t.paused:
            return {"state": t.state, "step": t.step, "message": "resumed before the pause took effect"}
        if done:
            return {"error": "the run ended before it paused"}
        return {"pending": True, "state": t.state,
                "message": "pause requested; the trainer waits at the end of this step"}

    def do_resume(self) -> dict:
        t = self.trainer
        if self._finished():
            return {"error": "the run has ended; nothing to resume"}
        t.resume()
        self._wait(lambda: t.state != "paused" or t.paused or self._finished(), timeout=5.0)
        return {"state": t.state, "step": t.step}

    def do_checkpoint(self) -> dict:
        refused = self._refuse_if_over("checkpoint")
        if refused:
            return refused
        with self._cond:
            seen = self._checkpoints
        self.trainer.request_checkpoint()
        if not self._wait(lambda: self._checkpoints > seen or self._finished()):
            return {"pending": True, "message": "checkpoint requested; written at the end of this step"}
        if self._checkpoints > seen:
            step, path = self._last_checkpoint
            return {"path": path, "step": step}
        return {"error": "the run ended before the checkpoint was written"}

    def do_draw(self) -> dict:
        viz = self.viz
        if viz is None:
            return {"error": "dashboards are unavailable in this run (no VisualizationManager)"}
        if not len(getattr(viz, "history", ())):
            return {"error": "no steps yet: nothing to draw"}
        with self._cond:
            seen, self._dashboard_error = self._dashboards, None
        viz.request_draw()
        if not self._wait(lambda: self._dashboards > seen or self._dashboard_error is not None):
            return {"pending": True, "message": "dashboard requested"}
        if self._dashboards > seen:
            return {"path": self._last_dashboard}
        return {"error": f"dashboard failed: {self._dashboard_error}"}

    def do_stop(self) -> dict:
        t = self.trainer
        if self._finished():
            return {"error": "the run has already ended"}
        already = t.stop_requested
        t.request_stop()
        return {"state": "stopping", "step": t.step,
                "message": "already stopping" if already else "stopping after this step: final checkpoint and exports"}
