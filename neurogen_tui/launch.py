"""--nproc-per-node N: the job's ranks as children of torch's elastic launcher (torchrun).

This process holds the run dir's lock and waits; rank 0 (a child) writes the files and serves the
control channel. Ranks are started in their own session, so the terminal's Ctrl+C reaches only
this process, which turns it into one stop request for the whole job.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from .distributed import LOCK_HELD_ENV

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


def launch(argv: list[str], cfg, headless: bool = True) -> int:
    """Run the job as `torchrun --nproc-per-node N` children and wait for it. This process holds
    the run dir's lock; rank 0 writes the files and serves the control channel.

    headless: rank 0's progress lines reach this terminal; a first Ctrl+C (or SIGTERM/SIGHUP) asks
    rank 0 to stop through the control channel, so every rank stops at the same step with a final
    checkpoint; a second one ends the job at once. Otherwise the app opens on the run as `attach`
    does, and its keys (pause, checkpoint, dashboard, stop) steer all ranks. Either way a rank
    that dies ends the job (torchrun stops the others) and the message names it."""
    import subprocess

    from .run import setup_logging

    setup_logging(cfg)
    nproc = cfg.nproc_per_node
    env = {**os.environ, LOCK_HELD_ENV: "1"}
    if "OMP_NUM_THREADS" not in env:  # torchrun would set 1 (and warn); share this machine's cores
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    started = time.time()
    proc = subprocess.Popen(torchrun_command(nproc, argv), env=env, stderr=subprocess.PIPE, text=True,
                            errors="replace", stdout=None if headless else subprocess.DEVNULL,
                            start_new_session=True)  # the terminal's Ctrl+C reaches us, not the ranks
    errors: list[str] = []
    report: list[str] = []
    drain = threading.Thread(target=_drain, args=(proc, errors, report, headless), daemon=True)
    drain.start()
    if headless:
        _stop_on_signals(cfg, proc)
    else:
        _show_app(cfg, proc, started)
    code = proc.wait()
    drain.join(timeout=5)
    if not headless:
        sys.stderr.writelines(errors)
    if code == 0:
        return 0
    why = root_cause(report) or f"torchrun exited with status {code}"
    print(f"neurogen-tui: error: the {nproc}-rank job ended: {why}; every rank was stopped; "
          f"the last checkpoint is in {cfg.checkpoint_dir}; details in {cfg.run_dir}/neurogen-tui.log",
          file=sys.stderr)
    return 1


def _drain(proc, errors: list[str], report: list[str], echo: bool) -> None:
    """The ranks' error lines (to the terminal now, or after the app); torchrun's report to the log."""
    for line in proc.stderr:
        if line.startswith("neurogen-tui:"):
            errors.append(line)
            if echo:
                sys.stderr.write(line)
        else:
            report.append(line.rstrip("\n"))
            log.info("torchrun: %s", line.rstrip("\n"))


def _stop_on_signals(cfg, proc) -> None:
    from .control import ControlClient, ControlError

    count = {"n": 0}

    def stop_job(signum, _frame):
        count["n"] += 1
        if count["n"] > 1:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        print(f"neurogen-tui: {signal.Signals(signum).name}: stopping all {cfg.nproc_per_node} ranks after "
              f"this step (final checkpoint); signal again to end at once", file=sys.stderr)
        threading.Thread(target=_ask_stop, args=(cfg.run_dir, proc, ControlClient, ControlError), daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_job)


def _show_app(cfg, proc, started: float, wait_s: float = 300.0) -> None:
    """The attach app on the job, once rank 0's control channel is up; after the app closes
    (the run ended, or the user detached), this process waits for the job."""
    from .runinfo import LIVE_STATES, liveness, read_run_info
    from .tui.attach import choose_feed

    deadline = time.time() + wait_s
    while proc.poll() is None and time.time() < deadline:
        info = read_run_info(cfg.run_dir) or {}
        if info.get("socket") and (info.get("started_at") or 0) >= started - 1 and liveness(info) in LIVE_STATES:
            break
        time.sleep(0.2)
    if proc.poll() is not None:
        return
    feed, app_class = choose_feed(Path(cfg.run_dir), 0.5)
    app = app_class(feed, feed.controller)
    app.run()
    if app.run_state.done is None and proc.poll() is None:  # the user detached: the run goes on
        print(f"neurogen-tui: detached; the {cfg.nproc_per_node}-rank run goes on and this terminal waits "
              f"for it (`neurogen-tui attach {cfg.run_dir}` from another one; Ctrl+C stops it)", file=sys.stderr)
        _stop_on_signals(cfg, proc)


def _ask_stop(run_dir, proc, client_cls, error_cls) -> None:
    """Stop through rank 0's control channel; without one, SIGTERM to the launcher (which passes
    it to every rank: each stops at the agreed step)."""
    try:
        reply = client_cls.for_run(run_dir).request("stop", timeout=30)
        if reply.get("ok"):
            return
    except (error_cls, OSError):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
