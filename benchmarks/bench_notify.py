"""What notifications cost training when every endpoint is dead (#30).

    python benchmarks/bench_notify.py [--config default] [--block 25] [--blocks 24]

The trainer as `--headless` composes it (the default model on the bundled sample, all monitoring
on), with a notice made at every step (the worst case: a run.alert of a new title each step, so
the rate limit holds none back), in blocks of steps taking turns (A B B A): in "dead" blocks the
notices go to three endpoints that cannot take them (one that accepts and never answers, one that
refuses the connection, one that answers 500, each with the default 10 s timeout and backoff); in
"none" blocks the same notices go to no channel. Reported: steps/s dead / none (target >= 0.99).
"""
from __future__ import annotations

import argparse
import http.server
import shutil
import socket
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from neurogen_tui.core.events import TrainingMetrics  # noqa: E402
from neurogen_tui.notify.channels import Webhook  # noqa: E402
from neurogen_tui.notify.notifier import _Worker  # noqa: E402


def dead_endpoints() -> tuple[list[str], callable]:
    """URLs of a server that never answers, a port that refuses, a server that answers 500."""
    release = threading.Event()

    class Hang(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            release.wait(3600)

        def log_message(self, *args):
            pass

    class Fail(Hang):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.end_headers()

    servers = []
    for handler in (Hang, Fail):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]
    urls = [f"http://127.0.0.1:{servers[0].server_port}/hang", f"http://127.0.0.1:{refused}/refused",
            f"http://127.0.0.1:{servers[1].server_port}/fail"]

    def close():
        release.set()
        for server in servers:
            server.shutdown()

    return urls, close


def main(argv: list[str] | None = None) -> int:
    from bench_trainer import SteppedTrainer, make_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=("default", "nanogpt"), default="default")
    p.add_argument("--block", type=int, default=25)
    p.add_argument("--blocks", type=int, default=24)
    p.add_argument("--tmp", default=None)
    args = p.parse_args(argv)
    urls, close_servers = dead_endpoints()
    run_dir = tempfile.mkdtemp(prefix="bench-notify-", dir=args.tmp)
    said: list[str] = []
    try:
        total = (args.blocks + 1) * args.block + 1
        cfg = make_config(args.config, total, str(Path(run_dir) / "t"))
        trainer = SteppedTrainer(cfg, display=True)
        notes = trainer.parts.notifications
        notifier = notes.notifier
        dead = [_Worker(Webhook(u, "json"), lambda text, level: said.append(text)) for u in urls]

        def every_step(event):  # a notice each step, each a new title: none held back
            if isinstance(event, TrainingMetrics):
                notes.alert(f"step {event.step}", "a notice a step")

        trainer.parts.bus.subscribe(every_step)
        trainer.run(args.block)  # warm-up
        times = trainer.blocks_in_turns("dead", "none", args.blocks, args.block,
                                        lambda v: setattr(notifier, "workers", dead if v == "dead" else []))
        notifier.workers = dead
        queued = sum(len(w.queue) for w in dead)
        trainer.close()
    finally:
        close_servers()
        shutil.rmtree(run_dir, ignore_errors=True)
    speed = sum(times["none"]) / sum(times["dead"])
    pairs = [none / d for d, none in zip(times["dead"], times["none"])]
    print(f"\nconfig {args.config}: {len(times['dead'])} + {len(times['none'])} blocks of {args.block} steps, in turns; "
          f"a notice every step; three dead endpoints (hang, refused, HTTP 500)\n")
    print("| notices go to | ms/step |")
    print("|---|---:|")
    for v in ("none", "dead"):
        print(f"| {'no channel' if v == 'none' else 'three dead endpoints'} | "
              f"{sum(times[v]) / (len(times[v]) * args.block) * 1e3:.2f} |")
    print(f"\n**steps/s with dead endpoints / with none = {speed:.3f}** (block pairs: median {statistics.median(pairs):.3f}); "
          f"failures said: {len(said)} (one a channel); notices still queued at the end: {queued}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
