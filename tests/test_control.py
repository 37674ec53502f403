"""The control channel, run.json and `ls`, over a real tiny training run in this process.

The trainer runs in a thread with the same composition as the CLI (build_run: recorder,
dashboards, run.json, control socket); every request goes through the real Unix socket.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from neurogen_tui.control import protocol as control

from neurogen_tui.control import server as control_server
from neurogen_tui.cli.entry import main
from neurogen_tui.train.config import TrainingConfig
from neurogen_tui.cli.commands import main_ls
from neurogen_tui.control.protocol import MAX_LINE, ControlClient, ControlError
from neurogen_tui.control.server import RunService
from neurogen_tui.core.events import EventBus, RunFinished
from neurogen_tui.run.files import read_jsonl
from neurogen_tui.run.recorder import MetricsRecorder
from neurogen_tui.cli.session import RunParts, build_run, setup_logging
from neurogen_tui.train.trainer import Trainer
from neurogen_tui.run.info import STALE_AFTER, liveness, read_run_info

HANG_GUARD = 120  # seconds: only so a broken build fails instead of hanging; never a speed check


def wait_until(condition, what: str, guard: float = HANG_GUARD):
    deadline = time.monotonic() + guard
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def make_cfg(run_dir: Path, **overrides) -> TrainingConfig:
    cfg = TrainingConfig(run_dir=str(run_dir))
    cfg.apply_test_mode()
    cfg.max_chunks = 100_000  # the test, not the data, decides when it ends
    cfg.epochs = 0
    cfg.checkpoint_interval = 100_000
    cfg.eval_interval = 1000
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def build_without_dashboards(cfg: TrainingConfig) -> RunParts:
    """build_run's composition minus the dashboard process (seconds per test saved)."""
    bus = EventBus()
    bus.subscribe(MetricsRecorder(cfg.viz_dir))
    trainer = Trainer(cfg, bus)
    return RunParts(trainer, bus, bus.subscribers[0], None, RunService.start(cfg, trainer, bus))


class LiveRun:
    """A trainer in a thread with run.json and the control socket, stopped at the end.
    full=True composes it exactly like the CLI (build_run, dashboards included)."""

    def __init__(self, run_dir: Path, full: bool = False, **overrides):
        self.cfg = make_cfg(run_dir, **overrides)
        setup_logging(self.cfg)
        self.parts = build_run(self.cfg, None) if full else build_without_dashboards(self.cfg)
        self.result = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.info = read_run_info(run_dir)
        self.client = ControlClient(self.info["socket"])

    def _run(self) -> None:
        self.result = self.parts.trainer.run()
        self.parts.close()

    @property
    def step(self) -> int:
        return self.parts.trainer.step

    def metrics_rows(self) -> int:
        return len(read_jsonl(self.cfg.viz_dir / "metrics.jsonl")[0])

    def finish(self) -> None:
        if self.thread.is_alive():
            try:
                self.client.request("stop", timeout=30)
            except ControlError:
                self.parts.trainer.request_stop()
            self.thread.join(HANG_GUARD)
        assert not self.thread.is_alive()


@pytest.fixture
def live(tmp_path):
    runs = []

    def start(name: str = "run", **overrides) -> LiveRun:
        run = LiveRun(tmp_path / name, **overrides)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.finish()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One running trainer for the tests that only poke at it and check that it goes on."""
    run = LiveRun(tmp_path_factory.mktemp("shared") / "run")
    wait_until(lambda: run.step >= 1, "a first step")
    yield run
    run.finish()


def raw_exchange(path: str, payload: bytes, timeout: float = 10.0) -> list[dict]:
    """Send raw bytes, then read reply lines until the server closes or goes quiet."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused early; its reply is still there to read
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
    return [json.loads(line) for line in data.splitlines() if line.strip()]


# ---- requests ------------------------------------------------------------------------------------
def follow(client: ControlClient, into: list, subscribed: threading.Barrier) -> threading.Thread:
    """A viewer's subscription in a thread: the status reply, then every event until the exit."""
    def run() -> None:
        stream = client.subscribe()
        into.append(next(stream))
        subscribed.wait()
        into.extend(stream)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_pause_checkpoint_resume_and_stop_with_two_viewers_following(live):
    run = live()
    seen: list[list[dict]] = [[], []]
    subscribed = threading.Barrier(3)
    viewers = [follow(ControlClient(run.info["socket"]), events, subscribed) for events in seen]
    subscribed.wait(HANG_GUARD)
    wait_until(lambda: run.step >= 2, "two steps")
    status = run.client.request("status")
    assert status["ok"] and status["state"] == "running" and status["pid"] == os.getpid()

    reply = run.client.request("pause")
    assert reply["ok"] and reply["state"] == "paused"  # answered once the trainer actually waits
    paused_at = reply["step"]
    assert run.parts.trainer.state == "paused"
    reply = run.client.request("checkpoint")  # carried out while paused; the ack names the file
    assert reply["ok"] and reply["step"] == paused_at
    assert Path(reply["path"]).is_file() and Path(reply["path"]).name == f"checkpoint_step_{paused_at:06d}.pt"
    time.sleep(0.5)
    assert run.step == paused_at and run.metrics_rows() == paused_at  # nothing moved while paused

    assert run.client.request("resume")["ok"]
    wait_until(lambda: run.step >= paused_at + 3, "steps after resuming")
    reply = run.client.request("stop")
    assert reply["ok"] and reply["state"] == "stopping"
    run.thread.join(HANG_GUARD)
    steps = run.metrics_rows()
    assert run.result.reason == "stopped" and run.step == steps
    assert (run.cfg.checkpoint_dir / f"checkpoint_step_{steps:06d}.pt").is_file()  # the final checkpoint
    info = read_run_info(run.cfg.run_dir)
    assert info["state"] == "stopped" and info["ended_at"] and info["step"] == steps
    assert not Path(run.info["socket"]).exists()  # the socket goes with the process

    for viewer, events in zip(viewers, seen):
        viewer.join(HANG_GUARD)
        assert events[0]["ok"] and "state" in events[0]  # the status reply comes first
        kinds = [(e.get("event"), e.get("state")) for e in events[1:]]
        assert ("state", "paused") in kinds and ("state", "stopping") in kinds
        assert any(e.get("event") == "checkpoint" and e["step"] == paused_at for e in events)
        assert events[-1] == {"event": "exit", "state": "stopped"}  # after run.json was final


GARBAGE = [
    (b"garbage\n", "not a JSON object"),
    (b"\xff\xfe\x00binary\n", "not a JSON object"),
    (b"[1, 2]\n", "expected a JSON object"),
    (b'{"cmd": "rm -rf /"}\n', "unknown command"),
    (b'{"id": 3}\n', "unknown command"),
    (b'{"cmd": {"nested": true}}\n', "unknown command"),
    (b"x" * (MAX_LINE + 10), "longer than"),
    (b"{" * 100_000 + b"\n", "longer than"),
]


def test_garbage_on_the_channel_is_rejected_and_the_run_goes_on(shared):
    for payload, needle in GARBAGE:
        replies = raw_exchange(shared.info["socket"], payload)
        assert replies and replies[0]["ok"] is False and needle in replies[0]["error"], payload[:40]
    deep = b"[" * 50_000 + b"]" * 50_000  # under the size limit, but deeper than the JSON parser goes
    replies = raw_exchange(shared.info["socket"], deep[:MAX_LINE - 2] + b"\n")
    assert replies and replies[0]["ok"] is False
    before = shared.step
    wait_until(lambda: shared.step >= before + 1, "another step after the garbage")
    assert shared.client.request("status")["state"] == "running"
    assert shared.result is None and not shared.parts.trainer.stop_requested


def test_a_bad_line_does_not_end_the_connection_and_odd_ids_are_dropped(shared):
    replies = raw_exchange(shared.info["socket"], b'nope\n{"id": "a", "cmd": "status"}\n'
                                                  b'{"id": [1, 2], "cmd": "status"}\n')
    assert [r["ok"] for r in replies] == [False, True, True]
    assert replies[1]["id"] == "a" and replies[2]["id"] is None


def test_too_many_connections_are_turned_away_and_served_again_once_closed(shared):
    idle = []
    try:
        for _ in range(control.MAX_CLIENTS):  # viewers that subscribe and then only listen
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(shared.info["socket"])
            s.sendall(b'{"cmd": "subscribe"}\n')
            idle.append(s)
        server = shared.parts.service.server
        # held, and each one's subscribe read (a connection that has not sent its request yet is the
        # one that makes room for a new one)
        wait_until(lambda: len(server._conns) == control.MAX_CLIENTS and not server._silent, "all connections held")
        replies = raw_exchange(shared.info["socket"], b'{"cmd": "status"}\n')
        assert replies == [{"id": None, "ok": False, "error": "too many connections"}]
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: not shared.parts.service.server._conns, "the idle connections to be let go")
    assert shared.client.request("status")["ok"] and shared.result is None


def test_socket_is_private_to_the_user(shared, monkeypatch):
    mode = stat.S_IMODE(os.stat(shared.info["socket"]).st_mode)
    assert mode == 0o600
    # a peer with another uid (only root could make one for real) is refused at the door
    monkeypatch.setattr(control_server, "peer_uid", lambda conn: os.getuid() + 1)
    replies = raw_exchange(shared.info["socket"], b'{"cmd": "stop"}\n')
    assert replies == [{"id": None, "ok": False, "error": "permission denied"}]
    assert not shared.parts.trainer.stop_requested
    monkeypatch.undo()
    # and a client does not talk to a socket that another user's process serves
    monkeypatch.setattr(control, "peer_uid", lambda conn: os.getuid() + 1)
    with pytest.raises(ControlError, match="served by another user"):
        shared.client.request("stop")
    assert not shared.parts.trainer.stop_requested


def test_a_second_server_does_not_steal_a_live_socket(shared):
    with pytest.raises(ControlError, match="another live process"):
        control.bind_private(Path(shared.info["socket"]))
    assert shared.client.request("status")["ok"]


def idle_service(cfg: TrainingConfig) -> tuple[Trainer, EventBus, RunService]:
    """run.json and the socket for a trainer that has not started (no training needed)."""
    bus = EventBus()
    trainer = Trainer(cfg, bus)
    return trainer, bus, RunService.start(cfg, trainer, bus)


def test_long_run_dir_puts_the_socket_in_a_private_directory(tmp_path, monkeypatch, request):
    # a short runtime dir, as /run/user/UID is: pytest's own tmp path can itself be too long
    runtime = Path(tempfile.mkdtemp(prefix="xdg", dir="/tmp"))
    runtime.chmod(0o700)
    request.addfinalizer(lambda: shutil.rmtree(runtime, ignore_errors=True))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    cfg = make_cfg(tmp_path / ("d" * 60) / ("e" * 60))
    _, _, service = idle_service(cfg)
    try:
        sock = Path(read_run_info(cfg.run_dir)["socket"])
        assert sock.parent == runtime / "neurogen-tui" and len(os.fsencode(sock)) <= 100
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert ControlClient(sock).request("status")["run_dir"] == str(Path(cfg.run_dir).resolve())
    finally:
        service.close()
    assert not sock.exists()


class FakeDashboards:
    """The VisualizationManager's interface (history, request_draw, add_listener), drawing a file
    on its own thread the way the real one does."""

    def __init__(self, viz_dir: Path):
        self.viz_dir, self.history, self.listeners = viz_dir, [1, 2, 3], []

    def add_listener(self, fn) -> None:
        self.listeners.append(fn)

    def request_draw(self) -> None:
        def draw() -> None:
            path = self.viz_dir / "training_latest.png"
            path.write_bytes(b"png")
            for fn in self.listeners:
                fn("dashboard", str(path))

        threading.Thread(target=draw, daemon=True).start()


def test_draw_is_answered_with_the_dashboard_path_once_written(tmp_path):
    cfg = make_cfg(tmp_path / "run")
    bus = EventBus()
    viz = FakeDashboards(Path(cfg.run_dir))
    service = RunService.start(cfg, Trainer(cfg, bus), bus, viz)
    try:
        reply = ControlClient(service.server.path).request("draw")
        assert reply["ok"] and reply["path"] == str(Path(cfg.run_dir) / "training_latest.png")
        assert Path(reply["path"]).read_bytes() == b"png"
    finally:
        service.close()


def test_requests_after_the_run_ended_are_refused_with_a_reason(tmp_path):
    cfg = make_cfg(tmp_path / "run")
    trainer, bus, service = idle_service(cfg)
    bus.publish(RunFinished(0, "completed"))
    client = ControlClient(read_run_info(cfg.run_dir)["socket"])
    for cmd in ("pause", "checkpoint", "stop"):
        reply = client.request(cmd)
        assert reply["ok"] is False and "ended" in reply["error"]
    service.close()
    assert read_run_info(cfg.run_dir)["state"] == "finished"


def test_a_process_that_exits_without_a_result_is_marked_failed(tmp_path):
    cfg = make_cfg(tmp_path / "run")
    _, _, service = idle_service(cfg)
    service._at_exit()  # the interpreter exiting before the trainer reported (an app crash)
    info = read_run_info(cfg.run_dir)
    assert info["state"] == "failed" and "before the trainer reported" in info["error"]
    assert liveness(info) == "failed"


# ---- run.json and liveness ---------------------------------------------------------------------------
def test_run_json_records_the_process_and_its_channel(shared):
    info = read_run_info(shared.cfg.run_dir)
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert info["socket"] == shared.info["socket"] and info["run_dir"] == str(Path(shared.cfg.run_dir).resolve())
    assert info["state"] == "running" and liveness(info) == "running"


def test_liveness_tells_stale_records_from_live_ones(tmp_path):
    me = {"state": "running", "pid": os.getpid(), "host": socket.gethostname(),
          "boot_id": control_boot_id(), "updated_at": time.time()}
    assert liveness(me) == "running"
    dead = dict(me, pid=dead_pid())
    assert liveness(dead) == "stale"
    reused = dict(me, pid_start="1")  # same pid, another process's start time
    assert liveness(reused) == "stale"
    now = time.time()
    elsewhere = dict(me, host="another-machine", pid=1)
    assert liveness(dict(elsewhere, updated_at=now - 10), now) == "running"
    assert liveness(dict(elsewhere, updated_at=now - STALE_AFTER - 1), now) == "stale"
    assert liveness(dict(me, state="finished", pid=dead_pid())) == "finished"
    assert liveness({"state": "exploded"}) == "unknown"


def control_boot_id() -> str:
    from neurogen_tui.run.info import boot_id

    return boot_id()


def dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- ls ----------------------------------------------------------------------------------------------
def fake_run(path: Path, info: dict | None, rows: list[dict] = ()) -> Path:
    (path / "training_viz").mkdir(parents=True)
    (path / "training_viz" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if info is not None:
        (path / "run.json").write_text(json.dumps(info))
    return path


def test_ls_lists_runs_with_state_step_and_loss(tmp_path, capsys):
    base = {"host": socket.gethostname(), "boot_id": control_boot_id(), "updated_at": time.time()}
    fake_run(tmp_path / "runs" / "done", dict(base, state="finished", reason="completed", pid=dead_pid()),
             [{"step": s, "loss": 6.0 - s / 10} for s in range(1, 6)])
    fake_run(tmp_path / "runs" / "killed", dict(base, state="running", pid=dead_pid()),
             [{"step": 7, "loss": 4.25}, {"step": 8, "loss": 4.0}])
    fake_run(tmp_path / "runs" / "old", None, [{"step": 3, "loss": 5.5}])
    fake_run(tmp_path / "runs" / "broken", dict(base, state="failed", error="CUDA out of memory"))
    assert main_ls([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:7] == ["NAME", "STATE", "STEP", "LOSS", "LR", "MODEL", "UPDATED"]
    by_name = {line.split()[0]: line.split() for line in out[1:]}
    assert by_name["done"][1:3] == ["finished", "5"]
    assert by_name["killed"][1:4] == ["stale", "8", "4.0000"]
    assert "--resume latest" in " ".join(by_name["killed"])
    assert by_name["old"][1:4] == ["unknown", "3", "5.5000"]
    assert by_name["broken"][1] == "failed" and "CUDA" in " ".join(by_name["broken"])

    # a run's settings come from its config.json: lr, model, steps done of asked; newest first
    (tmp_path / "runs" / "done" / "config.json").write_text(json.dumps({"lr": 3e-3, "model": "tiny", "max_chunks": 80}))
    os.utime(tmp_path / "runs" / "old" / "training_viz" / "metrics.jsonl", (time.time() + 60, time.time() + 60))
    assert main_ls([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out.splitlines()
    done = next(line.split() for line in out if line.startswith("done"))
    assert done[1:6] == ["finished", "5/80", "5.5000", "0.003", "tiny"]
    assert out[1].startswith("old")  # updated last: listed first

    assert main_ls([str(tmp_path / "runs"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["name"]: r["state"] for r in rows} == {"done": "finished", "killed": "stale", "old": "unknown",
                                                    "broken": "failed"}


def test_ls_shows_hostile_names_and_errors_inertly(tmp_path, capsys):
    evil = "\x1b]0;pwned\x07\x1b[2J"
    fake_run(tmp_path / "r", {"state": "failed", "run_name": "x" + evil, "error": "boom" + evil,
                              "updated_at": time.time()})
    assert main_ls([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned" in out


def test_ls_and_attach_reject_a_missing_directory_with_one_line(tmp_path, capsys):
    for cmd in ("ls", "attach"):
        assert main([cmd, str(tmp_path / "nope")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("neurogen-tui: error:") and "\n" not in err


def test_attach_says_when_there_is_no_run(tmp_path, capsys):
    assert main(["attach", str(tmp_path)]) == 2
    assert "no run in" in capsys.readouterr().err


def test_on_hangup_flag_is_validated(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--headless", "--run-dir", str(tmp_path), "--on-hangup", "explode"])
    assert exc.value.code == 2
    assert "--on-hangup" in capsys.readouterr().err
