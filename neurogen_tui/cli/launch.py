"""The trainer as children of this process: --nproc-per-node N ranks under torch's elastic
launcher (torchrun), or, under the app, one headless trainer.

This process holds the run dir's lock and waits (showing the app over the child, tui/rundir.py, when
there is a terminal); rank 0 (a child) writes the files and serves the control channel. Children are started
in their own session, so the terminal's Ctrl+C and SIGHUP reach only this process, which turns
them into one stop request for the whole job. With the app, the trainer in a process of its own
keeps its full speed: on a thread of the app's process it would share one GIL with Textual and
plotext (benchmarks/results/ui.md).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading

from ..control.protocol import ControlClient, ControlError
from ..run.info import read_run_info
from ..run.layout import EXIT_FAILED, EXIT_FORCED, EXIT_OK
from ..train.env import LOCK_HELD_ENV, NOTIFY_ENV
from ..tui.rundir import RunDirSource
from .session import ended_line, setup_logging
from .signals import hangup_message, install_stop_signals

log = logging.getLogger(__name__)

_ROOT_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
_ROOT_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
_SIGNAL = re.compile(r"\b(SIG[A-Z]+)\b")


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """torch's elastic launcher on this machine, running our CLI in each rank (headless: rank 0's
    progress goes to this terminal, the others print only errors)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "--max-restarts=0", "-m", "neurogen_tui", *argv, "--headless"]


def root_cause(lines: list[str]) -> str:
    """The first failed rank in torchrun's failure report, as one phrase ('' if none)."""
    rank = code = sig = None
    in_root = False
    for line in lines:
        if "Root Cause" in line:
            in_root = True
        elif in_root and (m := _ROOT_RANK.match(line)) and rank is None:
            rank = int(m.group(1))
        elif in_root and (m := _ROOT_EXIT.match(line)) and code is None:
            code = int(m.group(1))
            sig = (found := _SIGNAL.search(line)) and found.group(1)
    if rank is None:
        return ""
    how = f"was killed by {sig}" if sig else (f"exited with status {code}" if code is not None else "failed")
    return f"rank {rank} {how}"


def trainer_command(argv: list[str]) -> list[str]:
    """One trainer, headless, as a child of the app (the app then shares no GIL with it)."""
    return [sys.executable, "-m", "neurogen_tui", *argv, "--headless"]


def _end_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM to the child when this process dies (killed with SIGKILL, say), so the
    trainer stops at its step boundary with a final checkpoint instead of running unwatched."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch(argv: list[str], cfg, headless: bool = True) -> int:
    """Run the job as children and wait for it: `torchrun --nproc-per-node N` for N ranks, or a
    single headless trainer under the app. This process holds the run dir's lock; the trainer
    (rank 0) writes the files and serves the control channel.

    headless (N ranks only): rank 0's progress lines reach this terminal; a first Ctrl+C (or
    SIGTERM/SIGHUP) asks rank 0 to stop through the control channel, so every rank stops at the
    same step with a final checkpoint; a second one ends the job at once. Otherwise the app opens
    at once on the starting run, fed as `attach` is (tui/rundir.py, owning the child), and its keys
    (pause, checkpoint, dashboard, stop) steer the trainer or all ranks. A rank that dies ends the
    job (torchrun stops the others) and the message names it."""
    setup_logging(cfg)
    nproc = cfg.nproc_per_node
    proc = _spawn(cfg, argv, headless)
    app = None if headless else _owner_app(cfg, proc)
    errors: list[str] = []
    report: list[str] = []
    on_error = app.source.child_line if app is not None else None
    drain = threading.Thread(target=_drain, args=(proc, errors, report, headless, on_error, nproc), daemon=True)
    drain.start()
    if headless:
        _stop_on_signals(cfg, proc)
        forced = False
    else:
        forced = _show_app(cfg, proc, app)
    code = proc.wait()
    drain.join(timeout=5)
    if not headless and not forced:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            sys.stderr.writelines(errors)
            _summary(cfg, app, proc, code)
    if forced:
        return EXIT_FORCED
    if code == 0:
        return EXIT_OK
    if nproc == 1:
        return code if code > 0 else EXIT_FAILED
    why = root_cause(report) or f"torchrun exited with status {code}"
    print(f"neurogen-tui: error: the {nproc}-rank job ended: {why}; every rank was stopped; "
          f"the last checkpoint is in {cfg.checkpoint_dir}; details in {cfg.layout.log}",
          file=sys.stderr)
    return EXIT_FAILED


SECRET_FLAGS = ("--notify", "--notify-cmd")


def without_secrets(argv: list[str]) -> tuple[list[str], dict]:
    """argv less its --notify URLs and --notify-cmd commands (a webhook's URL is its secret: a
    child's command line is anyone's to read with ps), and those as {"notify": [...], ...}."""
    out, taken, i = [], {"notify": [], "notify_cmd": []}, 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in SECRET_FLAGS:
            if not eq and i + 1 < len(argv):
                i, value = i + 1, argv[i + 1]
            taken[name[2:].replace("-", "_")].append(value)
        else:
            out.append(arg)
        i += 1
    return out, taken


def _spawn(cfg, argv: list[str], headless: bool) -> subprocess.Popen:
    nproc = cfg.nproc_per_node
    env = {**os.environ, LOCK_HELD_ENV: "1"}
    argv, secrets = without_secrets(argv)
    if any(secrets.values()):
        env[NOTIFY_ENV] = json.dumps(secrets)
    if nproc > 1:
        command = torchrun_command(nproc, argv)
        if "OMP_NUM_THREADS" not in env:  # torchrun would set 1 (and warn); share this machine's cores
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    else:
        command = trainer_command(argv)
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace", stdout=None if headless else subprocess.DEVNULL,
                            start_new_session=True,  # the terminal's Ctrl+C and SIGHUP reach us, not the ranks
                            preexec_fn=_end_with_parent if sys.platform.startswith("linux") else None)


def _summary(cfg, app, proc, code: int) -> None:
    """Where the files are, and how the run ended, once the app has closed."""
    info = read_run_info(cfg.run_dir) or {}
    result = app.run_state.result
    what = getattr(result, "reason", None) or info.get("state") or app.run_state.state
    step = info.get("step", app.run_state.step)
    if code < 0:
        print(f"neurogen-tui: error: the trainer (pid {proc.pid}) was killed by {signal.Signals(-code).name} "
              f"at step {step}", file=sys.stderr)
        what = "killed"
    print(ended_line(cfg, what, step))


def _drain(proc, errors: list[str], report: list[str], echo: bool, on_error=None, nproc: int = 1) -> None:
    """The children's error lines (to the terminal now, or to the app and after it); anything
    else they print (torchrun's report, warnings) to the log."""
    source = "torchrun" if nproc > 1 else "trainer"
    for line in proc.stderr:
        if line.startswith("neurogen-tui:"):
            errors.append(line)
            if echo:
                sys.stderr.write(line)
            if on_error is not None:
                on_error(line)
        else:
            report.append(line.rstrip("\n"))
            log.info("%s: %s", source, line.rstrip("\n"))


def _stop_on_signals(cfg, proc) -> None:
    """The first signal asks every rank to stop at the next step (final checkpoint); a second one
    kills the job."""
    def say(message: str) -> None:
        with contextlib.suppress(OSError):  # stderr may be the terminal that hung up
            print(f"neurogen-tui: {message}", file=sys.stderr)

    def kill(_signum) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    who = f"all {cfg.nproc_per_node} ranks" if cfg.nproc_per_node > 1 else "the trainer"
    install_stop_signals(lambda: threading.Thread(target=_ask_stop, args=(cfg.run_dir, proc), daemon=True).start(),
                         say, repeat_window=0.0, what=f"stopping {who} after this step (final checkpoint)", at_once=kill)


def _owner_app(cfg, proc):
    from ..tui.app import MonitorApp  # Textual, only where there is a screen

    return MonitorApp(RunDirSource(cfg.run_dir, poll=0.25, child=proc), ui_budget=cfg.ui_budget,
                      on_hangup=cfg.on_hangup, close_when_done=cfg.test)


def _show_app(cfg, proc, app) -> bool:
    """The app on the job until it closes; then this process waits for the job. True when the
    user gave up on a stop that hung (q three times): the job is killed."""
    app.run()
    if app.forced:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.warning("the stop hung and the user left: the trainer (pid %d) was killed", proc.pid)
        with contextlib.suppress(OSError):
            print(f"neurogen-tui: left without waiting: the trainer was killed at step {app.run_state.step}; "
                  f"the last checkpoint in {cfg.checkpoint_dir} is the last good state", file=sys.stderr)
        return True
    if proc.poll() is not None or app.run_state.done is not None:
        return False
    if app.terminal_lost:  # SIGHUP with --on-hangup continue: the run goes on, this process waits
        log.warning(hangup_message(cfg.run_dir, pid=proc.pid))
    elif app.detached:
        print(f"neurogen-tui: the screen is closed; the run goes on in its own process (pid {proc.pid}), its log "
              f"in {cfg.layout.log}; `neurogen-tui attach {cfg.run_dir}` brings the screen back; this terminal "
              f"waits for it (Ctrl+C stops it with a final checkpoint)", file=sys.stderr, flush=True)
    else:  # the app ended some other way (an error in it): the run must not go on unwatched
        threading.Thread(target=_ask_stop, args=(cfg.run_dir, proc), daemon=True).start()
    _stop_on_signals(cfg, proc)
    return False


def _ask_stop(run_dir, proc) -> None:
    """Stop through rank 0's control channel; without one, SIGTERM to the launcher (which passes
    it to every rank: each stops at the agreed step)."""
    try:
        reply = ControlClient.for_run(run_dir).request("stop", timeout=30)
        if reply.get("ok"):
            return
    except (ControlError, OSError):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
