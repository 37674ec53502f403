"""Notifications (#30): every kind of notice to every channel (a real local HTTP server in the shapes
Slack, Discord, ntfy and plain JSON take, and a real command), the rate limit, endpoints that fail,
hang or refuse, secrets masked, a stall caught while the training thread is blocked, and the
terminal told by a watching app."""
from __future__ import annotations

import http.server
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from neurogen_tui.core.events import (CheckpointSkipped, EvalResult, EventBus, GuardFired, RunFailed, RunFinished,
                                      RunNote, TrainingMetrics)
from neurogen_tui.notify.channels import Command, Webhook, format_for
from neurogen_tui.notify.notice import Notice, mask_in, mask_url, terminal_alert
from neurogen_tui.notify.notifier import Notifier
from neurogen_tui.notify.setup import Notifications

HANG_GUARD = 120  # seconds: only so a broken build fails instead of hanging; never a speed check
SECRET = "T0SECRET/B0SECRET/XyZtoken123"


class Endpoint:
    """A real HTTP server on localhost recording each POST (path, JSON body); `mode` makes it
    answer 200, 500, or hang (accept and never answer)."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode, self.posts, self.release = mode, [], threading.Event()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.posts.append((self.path, body))
                if endpoint.mode == "hang":
                    endpoint.release.wait(HANG_GUARD)
                    return
                self.send_response(500 if endpoint.mode == "500" else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    made = []

    def make(mode="ok"):
        made.append(Endpoint(mode))
        return made[-1]

    yield make
    for e in made:
        e.close()


def wait_until(condition, what: str, timeout: float = HANG_GUARD):
    deadline = time.monotonic() + timeout
    while not (got := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)
    return got


def refused_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hooks/{SECRET}"


def command_to(path: Path) -> str:
    """A real command: appends the notice from its standard input, one line each."""
    script = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read().strip() + '\\n')"
    return f"{sys.executable} -c \"{script}\" {path}"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ---- every kind, every channel ------------------------------------------------------------------------
EVENTS = [  # (kind, what makes it)
    ("nonfinite", TrainingMetrics(step=3, loss=float("nan"), accuracy=0.0, tokens_per_sec=0, gpu_memory_mb=0,
                                  learning_rate=1e-3, timestamp=0.0, skipped=True)),
    ("guard", GuardFired(4, "spike", "loss 9.1 is 8 deviations above 3.2", "rollback", "rolled back to step 2")),
    ("checkpoint", CheckpointSkipped(5, "the state looks diverged")),
    ("best_val", EvalResult(6, 2.5, 0.3)),
    ("failed", RunFailed(7, "Traceback...\nRuntimeError: CUDA error: an illegal memory access")),
]


def test_each_kind_of_notice_reaches_each_channel_once_with_its_body(endpoint, tmp_path):
    server = endpoint()
    received = tmp_path / "command.jsonl"
    bus = EventBus()
    step = [0]
    urls = [f"{server.url}/services/{SECRET}", f"{server.url}/api/webhooks/1/{SECRET}", f"{server.url}/mytopic"]
    notes = Notifications(bus, "lr3e-3", tmp_path, step=lambda: step[0], paused=lambda: False, urls=urls[:1],
                          fmt="slack", commands=[command_to(received)], best_val=True, stall_after=0.3,
                          disk_low_mb=1e12)  # every disk is "low" against a petabyte: the disk notice fires
    # the other shapes, each its own channel on the same notifier: Discord's and ntfy's bodies
    notes.notifier.workers += [type(notes.notifier.workers[0])(Webhook(urls[1], "discord"), notes._say),
                               type(notes.notifier.workers[0])(Webhook(urls[2], "ntfy"), notes._say),
                               type(notes.notifier.workers[0])(Webhook(f"{server.url}/any", "json"), notes._say)]
    step[0] = 1
    time.sleep(1.2)  # the watchdog sees a first step...
    wait_until(lambda: any(p[1].get("tags") == ["stall"] for p in server.posts), "the stall notice")  # ...then none
    for _, event in EVENTS:
        bus.publish(event)
    bus.publish(RunNote("checkpoint failed", {"text": "No space left on device", "step": 8}))  # held: a 2nd checkpoint
    notes.alert("eval done", "bleu 31.2", "WARN")
    bus.publish(RunFinished(9, "completed", checkpoint="/x/checkpoint_step_000009.pt"))
    assert notes.close() == []
    kinds = ["stall", "disk", "nonfinite", "guard", "checkpoint", "best_val", "failed", "alert", "finished"]
    by_shape = {"slack": [], "discord": [], "ntfy": [], "json": []}
    for path, body in server.posts:
        shape = ("json" if "source" in body else "discord" if "content" in body else "ntfy" if "topic" in body
                 else "slack")
        by_shape[shape].append((path, body))
    got_json = [b["kind"] for _, b in by_shape["json"]]
    assert sorted(got_json) == sorted(kinds + ["checkpoint"])  # the held-back one summed up at the end
    assert [b["held"] for _, b in by_shape["json"] if b["kind"] == "checkpoint"] == [0, 1]
    assert sorted(n["kind"] for n in lines(received)) == sorted(got_json)  # the command: the same notices
    for shape in ("slack", "discord", "ntfy"):
        assert len(by_shape[shape]) == len(got_json), shape
    # the bodies each service takes
    finished = next(b for _, b in by_shape["json"] if b["kind"] == "finished")
    assert finished["title"] == "lr3e-3: completed at step 9" and finished["source"] == "neurogen-tui"
    assert f"{socket.gethostname()}:{tmp_path.resolve()}" in finished["text"]
    failed = next(b for _, b in by_shape["json"] if b["kind"] == "failed")
    assert failed["level"] == "error" and failed["text"].startswith("RuntimeError: CUDA error")
    assert next(b for _, b in by_shape["json"] if b["kind"] == "alert")["level"] == "warning"
    slack = [b for p, b in by_shape["slack"] if p == f"/services/{SECRET}"]
    assert any("*lr3e-3: completed at step 9*" in b["text"] for b in slack)
    assert all(b["username"] == "neurogen-tui" and len(b["content"]) <= 2000 for _, b in by_shape["discord"])
    assert all(p == "/" and b["topic"] == "mytopic" and b["priority"] in (3, 4, 5) for p, b in by_shape["ntfy"])
    assert {b["priority"] for _, b in by_shape["ntfy"] if b["tags"] == ["failed"]} == {5}


def test_the_bus_records_every_notice_for_the_timeline_and_the_app(tmp_path):
    from neurogen_tui.core.events import Notified
    from neurogen_tui.run.timeline import Timeline, describe, read_events

    bus = EventBus()
    seen = []
    bus.subscribe(lambda e: seen.append(e) if isinstance(e, Notified) else None)
    timeline = Timeline(tmp_path)
    bus.subscribe(timeline)
    notes = Notifications(bus, "r", tmp_path, step=lambda: 0, paused=lambda: False, interval=60, disk_low_mb=0)
    bus.publish(GuardFired(4, "spike", "loss 9.1", "rollback", "rolled back"))
    bus.publish(GuardFired(5, "spike", "loss 9.3", "rollback", "rolled back"))  # within the interval: held
    notes.close()
    timeline.close()
    notices = [e for e in read_events(tmp_path) if e["kind"] == "notice"]
    assert [(n["what"], n["held"]) for n in notices] == [("guard", 0), ("guard", -1), ("guard", 1)]
    assert describe(notices[0]) == "notified: r: guard rollback at step 4"
    assert describe(notices[1]).startswith("held back: ")
    assert len(seen) == 3


def test_the_rate_limit_holds_a_kind_back_and_sums_it_up_when_the_interval_is_over(endpoint):
    server = endpoint()
    notifier = Notifier([Webhook(server.url + "/x", "json")], interval=0.6)
    for i in range(5):
        notifier.notify(Notice("guard", f"r: guard at step {i}", "spike", "warning", step=i))
    notifier.notify(Notice("stall", "r: no step", level="error"))  # another kind: not held by the guard's
    wait_until(lambda: len(server.posts) >= 3, "the summary after the interval")
    bodies = [b for _, b in server.posts]
    assert [(b["kind"], b["held"]) for b in bodies] == [("guard", 0), ("stall", 0), ("guard", 4)]
    assert bodies[2]["title"].startswith("r: guard at step 4 (and 3 more since ")
    assert notifier.close() == []


@pytest.mark.parametrize("mode", ["500", "refused", "hang"])
def test_a_failing_endpoint_costs_the_caller_nothing_and_is_reported_once_masked(endpoint, mode):
    url = refused_url() if mode == "refused" else f"{endpoint(mode).url}/hooks/{SECRET}"
    said = []
    channel = Webhook(url, "json", timeout=0.5)
    notifier = Notifier([channel], say=lambda text, level: said.append(text), interval=0.0, backoff=(0.0, 0.05, 0.1))
    started = time.perf_counter()
    for i in range(50):
        notifier.notify(Notice("guard", f"r: {i}"))
    assert time.perf_counter() - started < 0.5  # handed over, never sent, on the caller's thread
    wait_until(lambda: said, "the failure said")
    time.sleep(0.3)
    left = notifier.close(timeout=1.0)
    assert len(said) == 1 and "notifications to http://127.0.0.1" in said[0] and "/***" in said[0]
    assert left and "not delivered" in left[0]
    for text in said + left:
        assert "SECRET" not in text and "token" not in text


def test_urls_are_masked_and_the_body_shape_is_told_from_the_url():
    assert mask_url(f"https://hooks.slack.com/services/{SECRET}") == "https://hooks.slack.com/***"
    assert mask_url("https://user:pw@ntfy.sh/private-topic?auth=abc") == "https://ntfy.sh/***"
    assert mask_url("not a url") == "***"
    assert "private-topic" not in mask_in("POST https://ntfy.sh/private-topic failed", ["https://ntfy.sh/private-topic"])
    assert format_for(f"https://hooks.slack.com/services/{SECRET}") == "slack"
    assert format_for("https://discord.com/api/webhooks/1/abc") == "discord"
    assert format_for("https://ntfy.sh/topic") == "ntfy" and format_for("https://example.org/hook") == "json"
    assert format_for("https://example.org/hook", "slack") == "slack"


def test_a_failing_command_is_reported_with_its_last_error_line(tmp_path):
    said = []
    notifier = Notifier([Command(f"{sys.executable} -c \"import sys; sys.exit('no route to the pager')\"")],
                        say=lambda text, level: said.append(text), backoff=(0.0,))
    notifier.notify(Notice("finished", "r: done"))
    wait_until(lambda: said, "the failure said")
    notifier.close(timeout=1.0)
    assert "exit status 1: no route to the pager" in said[0]


def test_the_terminal_alert_is_inert_whatever_the_title_holds():
    out = terminal_alert("r: \x1b]0;owned\x07 done; now", "line\nbreak\x1b[31m", tmux=False)
    assert out.startswith("\a\x1b]9;") and out.count("\x1b") == 2 and out.count("\x07") == 3  # the bell, 2 ends
    assert "\n" not in out and "r:  ]0,owned  done, now" in out  # the 777 title: no ; to end its field
    wrapped = terminal_alert("t", "x", tmux=True)
    assert wrapped.startswith("\a\x1bPtmux;\x1b\x1b]9;t: x\x07") and wrapped.endswith("\x1b\\")


# ---- the trainer: composed, stalled, secrets -------------------------------------------------------------
def test_a_training_run_notifies_its_end_and_writes_no_secret_anywhere(endpoint, tmp_path, capsys):
    from neurogen_tui.cli import entry as cli

    server = endpoint()
    received = tmp_path / "command.jsonl"
    run_dir = tmp_path / "run"
    url = f"{server.url}/services/{SECRET}"
    assert cli.main(["--test", "--headless", "--run-dir", str(run_dir), "--notify", url, "--notify-cmd",
                     command_to(received), "--disk-low-mb", "0"]) == 0  # (a nearly full disk here is not the test's)
    posts = [b for p, b in server.posts if p == f"/services/{SECRET}"]
    assert [b["kind"] for b in posts] == ["finished"] and "final loss" in posts[0]["text"]
    assert [n["kind"] for n in lines(received)] == ["finished"]
    events = [json.loads(line) for line in (run_dir / "training_viz" / "events.jsonl").read_text().splitlines()]
    assert [e["what"] for e in events if e["kind"] == "notice"] == ["finished"]
    out = capsys.readouterr()
    for path in run_dir.rglob("*"):  # run.json, config.json, the log, the checkpoints, the timeline
        if path.is_file():
            assert b"SECRET" not in path.read_bytes(), path
    assert "SECRET" not in out.out + out.err


def test_a_launchers_child_gets_the_webhooks_out_of_sight_of_ps():
    from neurogen_tui.cli.launch import without_secrets

    argv, secrets = without_secrets(["--lr", "1e-3", "--notify", f"https://h/{SECRET}", f"--notify-cmd=pager {SECRET}",
                                     "--notify-format", "slack"])
    assert argv == ["--lr", "1e-3", "--notify-format", "slack"]
    assert secrets == {"notify": [f"https://h/{SECRET}"], "notify_cmd": [f"pager {SECRET}"]}
    # the child takes them from its environment, and leaves none there for its own children
    from neurogen_tui.cli.prepare import take_handed_notify
    from neurogen_tui.train.config import TrainingConfig
    from neurogen_tui.train.env import NOTIFY_ENV

    os.environ[NOTIFY_ENV] = json.dumps(secrets)
    cfg = take_handed_notify(TrainingConfig())
    assert cfg.notify == (f"https://h/{SECRET}",) and cfg.notify_cmd == (f"pager {SECRET}",)
    assert NOTIFY_ENV not in os.environ


def test_a_stall_is_notified_while_the_training_thread_is_blocked_and_again_when_it_steps(endpoint, tiny_cfg):
    from neurogen_tui.cli.session import build_run

    server = endpoint()
    tiny_cfg.max_chunks, tiny_cfg.stall_after = 6, 3.0
    tiny_cfg.notify = (f"{server.url}/hook",)
    tiny_cfg.notify_format, tiny_cfg.disk_low_mb = "json", 0.0
    parts = build_run(tiny_cfg, None, control=False)
    blocked, release = [], threading.Event()

    def hang_at_step_3(event):  # a subscriber runs on the training thread: this blocks it, as a collective would
        if isinstance(event, TrainingMetrics) and event.step == 3 and not blocked:
            blocked.append(time.monotonic())
            release.wait(HANG_GUARD)

    def the_block():  # (a loaded machine may be slower than 3 s at some other step: that one is not the test's)
        return next((i for i, (_, b) in enumerate(server.posts) if b["kind"] == "stall" and "(at step 3)" in b["title"]),
                    None)

    parts.bus.subscribe(hang_at_step_3)
    training = threading.Thread(target=parts.trainer.run, daemon=True)
    training.start()
    try:
        wait_until(lambda: the_block() is not None, "the stall notice")
        index = the_block()
        assert time.monotonic() - blocked[0] <= tiny_cfg.stall_after + 5
        stall = server.posts[index][1]
        assert stall["level"] == "error" and stall["title"].startswith("run: no step for ")
    finally:
        release.set()
        training.join(HANG_GUARD)
        parts.close()
    after = [b for _, b in server.posts[index + 1:]]
    assert after[0]["kind"] == "stall" and after[0]["level"] == "info" and "steps again" in after[0]["title"]
    assert after[-1]["kind"] == "finished"


def test_a_paused_run_is_not_a_stall(tmp_path):
    got = []
    notes = Notifications(EventBus(), "r", tmp_path, step=lambda: 1, paused=lambda: True, stall_after=0.2,
                          disk_low_mb=0)
    notes.notifier.notify = got.append
    notes.watchdog.notify = got.append
    time.sleep(1.5)
    notes.close()
    assert [n.kind for n in got] == []


# ---- the logging API ------------------------------------------------------------------------------------
def test_the_logging_apis_alert_and_a_crash_reach_the_channels(endpoint, tmp_path):
    import neurogen_tui as ngt

    server = endpoint()
    run = ngt.init(run_dir=tmp_path / "api", notify=f"{server.url}/hook", notify_format="json", stall_after=0.5,
                   disk_low_mb=0)
    run.log({"loss": 2.0})
    run.alert("val acc dropped", "from 61% to 40%", level="ERROR")
    time.sleep(2.0)  # the loop stops calling log(): a stall
    run.log({"loss": 1.9})
    try:
        raise ValueError("bad batch shape (8, 65) at step 2")
    except ValueError as exc:
        run.__exit__(type(exc), exc, exc.__traceback__)
    bodies = [b for _, b in server.posts]
    assert [b["kind"] for b in bodies] == ["alert", "stall", "stall", "failed"]
    assert bodies[0]["title"] == "api: val acc dropped" and bodies[0]["level"] == "error"
    assert bodies[3]["text"].startswith("ValueError: bad batch shape (8, 65) at step 2")


# ---- the app: the terminal told, the past shown --------------------------------------------------------
def test_a_watching_app_rings_for_a_new_notice_and_only_shows_the_past_ones(tmp_path):
    import asyncio

    from neurogen_tui.run.timeline import Timeline
    from neurogen_tui.tui.app import MonitorApp
    from neurogen_tui.tui.rundir import RunDirSource
    import neurogen_tui as ngt

    run = ngt.init(run_dir=tmp_path / "r", disk_low_mb=0)
    for step in range(3):
        run.log({"loss": 3.0 - step})
    run.alert("an old one", "before the viewer opened")
    run._writer.flush()
    time.sleep(0.5)

    async def main():
        app = MonitorApp(RunDirSource(tmp_path / "r", poll=0.1))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(1.0)
            assert app.rung == []  # the past: shown, not rung
            run.alert("diverging", "loss 9.1", "WARN")
            for _ in range(100):
                await pilot.pause(0.05)
                if app.rung:
                    break
            assert [n["title"] for n in app.rung] == ["r: diverging"]
            text = "\n".join(str(line.text) for line in app.monitor.log_pane.lines)
            assert "notice: r: an old one: before the viewer opened" in text and "notice: r: diverging: loss 9.1" in text

    asyncio.run(main())
    run.finish()
    assert not isinstance(Timeline, type(None))
