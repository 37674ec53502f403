"""The Textual app: a header, four live charts, the samples table, a log pane and the keys.

The feed's producer (a trainer on a thread with --in-process; otherwise a run directory and its
control channel, the trainer being a child process: owner.py, attach.py, watch.py) runs in a
thread worker and never touches a widget: its events wait in the feed's queue until the drain
timer (4 Hz) applies them as one batch, and the charts redraw on their own slower timer (at most
2 Hz) from a reduced series. While training keeps every core busy, the screen's periodic work
keeps to a CPU budget (budget.py), and so does a screen sharing its process with the trainer: the
header once a second, charts and samples as the allowance permits. Stopping always goes through the controller and waits for the producer to finish, so the
final checkpoint and exports are on disk before the app exits.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.message import Message
from textual.reactive import var
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from ..text import sanitize
from .budget import ScreenBudget
from .feed import Feed, FeedDone
from .state import RunState
from .widgets import CHARTS, ChartPanel, HelpScreen, LogPane, RunHeader, SamplesTable

EXIT_OK, EXIT_FAILED, EXIT_FORCED = 0, 1, 130
log = logging.getLogger(__name__)


class ChartsBuilt(Message):
    """Plot builds done in the charts' thread, ready to show."""

    def __init__(self, results: list, started: float, built: float) -> None:
        super().__init__()
        self.results, self.started, self.built = results, started, built


class TrainingApp(App[int]):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses elsewhere find it too
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    BINDINGS = [
        Binding("p", "pause", "pause/resume"),
        Binding("c", "checkpoint", "checkpoint"),
        Binding("d", "draw", "dashboard"),
        Binding("q", "stop", "stop", priority=True),
        Binding("ctrl+c", "stop", "stop", show=False, priority=True),
        Binding("ctrl+q", "stop", "stop", show=False, priority=True),
        Binding("question_mark", "help", "help"),
    ]
    # The UI shares the trainer's process (and its GIL): what it draws, it takes from training.
    # Keys do not wait for these timers; they only set how fresh the numbers on screen are.
    DRAIN_INTERVAL = 0.25  # seconds between applying queued events (header, log, samples)
    CHART_INTERVAL = 0.5  # seconds between chart redraws, at least
    CHART_DUTY = 0.03  # longest share of the UI thread the charts may take on long runs
    CHART_MAX_WAIT = 5.0  # seconds: even a slow machine sees its charts move
    FORCE_AFTER = 5.0  # seconds after a stop request before q can abandon a stop that hangs
    UI_BUDGET = 0.01  # share of the time the screen may use the CPU while it costs training (--ui-budget)
    BUSY_HEADER_INTERVAL = 1.0  # seconds between header updates while the budget applies
    BUSY_CHART_MAX_WAIT = 30.0  # seconds: the longest the budget holds back the charts and samples

    HELP_NOTE = ""  # a line subclasses add to the help screen about their own keys
    # var, not reactive: an App's reactive repaints the whole screen on each change (measured: a
    # full-screen update at every drain, ~28 ms each at 120x40, most of the UI's CPU)
    state: var[str] = var("starting")
    step: var[int] = var(0)

    def __init__(self, feed: Feed, controller, ui_budget: float | None = None) -> None:
        # NO_COLOR: Textual alone would only turn colours to greys; native ANSI colours let its
        # NoColor filter drop them altogether (app.tcss marks the state by reverse video instead)
        super().__init__(ansi_color=True if "NO_COLOR" in os.environ else None)
        self.feed = feed
        self.controller = controller
        self.run_state = RunState(feed.title, read_only=controller.read_only, run_dir=feed.run_dir)
        self._mounted_once = False
        self.exit_requested = False
        self.forced = False  # left without waiting for the producer
        self._stop_asked: list[float] = []
        self.terminal_lost = False
        # --on-hangup continue: called with terminal_lost after a SIGHUP; training goes on (run_app sets it)
        self.after_hangup = None
        self._chart_key: tuple = ()
        self._next_chart_at = 0.0
        self.chart_seconds = 0.0  # the last redraw's cost (data reduction + plot build)
        self.charts_building = False
        self._chart_update_seconds = 0.0
        self.budget = ScreenBudget(self.UI_BUDGET if ui_budget is None else ui_budget, shares_gil=feed.trains_here)
        self._header_at = float("-inf")
        self._header_state = ""
        self._frozen = False
        self._charts_at = float("-inf")  # perf_counter time of the last chart redraw

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Grid(id="charts"):
            for spec in CHARTS:
                yield ChartPanel(spec, id=f"chart-{spec.column}")
        with Horizontal(id="bottom"):
            yield SamplesTable(id="samples")
            yield LogPane(id="log")
        yield Footer()

    def on_mount(self) -> None:
        # Textual also calls a base class's on_mount, so a subclass that calls super() as well
        # would start a second producer (two threads in one trainer): only the first call counts
        if self._mounted_once:
            return
        self._mounted_once = True
        # kept, not queried: app.query_one looks at the active screen, which may be the help
        self.header_widget, self.log_pane = self.query_one(RunHeader), self.query_one(LogPane)
        self.samples_table, self.charts = self.query_one(SamplesTable), list(self.query(ChartPanel))
        self.title = f"neurogen-tui: {self.feed.title}"
        self._install_signal_handlers()
        self.set_interval(self.DRAIN_INTERVAL, self.drain)
        self.set_interval(self.CHART_INTERVAL / 2, self.draw_charts)
        self.produce()

    @work(thread=True, exit_on_error=False, name="feed")
    def produce(self) -> None:
        self.feed.produce()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name == "feed" and event.state == WorkerState.ERROR:
            self.run_state.log_exception("feed", event.worker.error)
            self.feed.put(FeedDone(EXIT_FAILED))

    # ---- timers ----------------------------------------------------------------------------
    def drain(self) -> None:
        """Apply every queued event as one batch, then update the widgets once."""
        rs = self.run_state
        rs.apply_all(self.feed.drain())
        # the allowance applies only while the run trains: paused, stopping or ended, the screen
        # costs it nothing and catches up at once
        streaming = rs.state in ("running", "watching")
        self.budget.training = streaming and rs.done is None
        if len(rs.history):  # the screen's own start, and the wait for a first step, are free
            self.budget.tick()
        if not self._frozen and self.feed.trains_here and rs.first_step is not None and rs.step > rs.first_step:
            # The trainer has taken its first step: the model, the data pipeline, the imports and
            # the screen are built. Move them out of the collector's full passes: one such pass took
            # 236 ms on the UI thread, holding the GIL the trainer needs (2-core VM, tiny model).
            self._frozen = True
            gc.collect()  # what is garbage now must not be frozen with the rest
            gc.freeze()
            self.budget.forget()  # a one-off for the whole process, not the screen's work
        if self.terminal_lost:  # nobody sees the screen: only wait for the producer
            rs.take_logs()
        else:
            logs = rs.take_logs()
            for line in logs:
                self.log_pane.add(line)
            if not self.budget.limited:  # limited, the table comes with the charts
                # while samples stream in, once a second; the run's last ones show at once
                self.samples_table.show(rs.samples, rs.samples_version, throttle=streaming)
            now = time.monotonic()
            if (not self.budget.limited or logs or rs.state != self._header_state
                    or now - self._header_at >= self.BUSY_HEADER_INTERVAL):
                self.header_widget.info = rs.header()
                self._header_at, self._header_state = now, rs.state
        self.state, self.step = rs.state, rs.step
        if rs.done is not None and self.exit_requested:
            self.exit(rs.done.exit_code, return_code=rs.done.exit_code)

    def draw_charts(self, force: bool = False) -> None:
        """Redraw the charts when the history or the size changed: new rows and captions here,
        the plot builds in a thread (one redraw in flight at a time). At most every
        CHART_INTERVAL, and never more than CHART_DUTY of the time (the last redraw's measured
        CPU cost), so a slow machine or a huge terminal degrades the charts' rate, not the keys.
        Where the screen's CPU costs training, a redraw (and the samples table with it) waits
        until the screen's allowance covers its last cost, or BUSY_CHART_MAX_WAIT has passed (so
        the charts keep moving even when the header alone spends the share); a new terminal
        size never waits."""
        now = time.perf_counter()
        key = (len(self.run_state.history), self.size)
        if self.terminal_lost or self.charts_building or not (len(self.run_state.history) or self._chart_key):
            return  # nothing drawn and nothing to draw yet: the first rows get the first redraw
        force = force or (bool(self._chart_key) and key[1] != self._chart_key[1])  # resized
        if not force and (key == self._chart_key or now < self._next_chart_at):
            return
        if not force and not self.budget.allows(self.chart_seconds) and now - self._charts_at < self.BUSY_CHART_MAX_WAIT:
            return  # the allowance comes first
        self._chart_key, self._charts_at = key, now
        cpu = time.thread_time()
        builds = [(panel.chart, panel.prepare(self.run_state.history)) for panel in self.charts]
        if self.budget.limited:  # the samples table follows with the charts, within the same allowance
            rs = self.run_state
            self.samples_table.show(rs.samples, rs.samples_version, throttle=False)
        self._chart_update_seconds = time.thread_time() - cpu
        self.charts_building = True
        self.build_charts([(chart, build) for chart, build in builds if build is not None], now)

    @work(thread=True, exit_on_error=False, group="charts")
    def build_charts(self, builds: list, started: float) -> None:
        t0 = time.thread_time()
        results = []
        try:
            results = [(chart, build()) for chart, build in builds]  # each build catches its own errors
        finally:
            cpu = time.thread_time() - t0
            self.budget.charge(cpu)
            # post_message is thread-safe and does not wait (call_from_thread would wait forever
            # for an app that closes meanwhile, and the process could not exit)
            self.post_message(ChartsBuilt(results, started, cpu))

    @on(ChartsBuilt)
    def _show_charts(self, message: ChartsBuilt) -> None:
        results, started, built = message.results, message.started, message.built
        for chart, text in results:
            chart.show(text)
        self.charts_building = False
        self.chart_seconds = self._chart_update_seconds + built
        if self.budget.limited:  # the allowance spaces them out
            wait = self.CHART_INTERVAL
        else:
            wait = min(self.CHART_MAX_WAIT, max(self.CHART_INTERVAL, self.chart_seconds / self.CHART_DUTY))
        self._next_chart_at = started + wait

    def watch_state(self, state: str) -> None:
        self.refresh_bindings()

    # ---- keys ------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("pause", "checkpoint", "draw"):
            return not self.controller.read_only and self.run_state.done is None
        return True

    def _say(self, text: str, level: str = "info") -> None:
        self.run_state.log(level, text)
        self.drain()

    def action_pause(self) -> None:
        self._say(self.controller.toggle_pause())

    def action_checkpoint(self) -> None:
        self._say(self.controller.checkpoint())

    def action_draw(self) -> None:
        self._say(self.controller.draw())

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        else:
            self.push_screen(HelpScreen(self.controller.read_only, self.HELP_NOTE))

    def action_stop(self) -> None:
        """Stop the producer and exit once it has finished (at once if it already has). A stop
        that hangs (a stalled data source) can be abandoned: q three times, FORCE_AFTER apart."""
        now = time.monotonic()
        if self.run_state.done is not None:
            self.exit(self.run_state.done.exit_code, return_code=self.run_state.done.exit_code)
            return
        if not self.exit_requested:
            self.exit_requested, self._stop_asked = True, [now]
            if not self.controller.read_only:
                self.run_state.set_state("stopping")
            self._say(self.controller.stop())
            return
        self._stop_asked.append(now)
        if len(self._stop_asked) >= 3 and now - self._stop_asked[0] >= self.FORCE_AFTER:
            self.forced = True
            self.exit(EXIT_FORCED, return_code=EXIT_FORCED)
            return
        self._say(f"{self.controller.stop()}; if it hangs, q twice more after {self.FORCE_AFTER:.0f}s "
                  f"leaves without the final files", "warning")

    # ---- signals ---------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        """SIGHUP (the SSH connection dropped), SIGTERM and SIGINT stop the run like `q`. Without
        handlers on the loop the app dies at once with no final checkpoint."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                pass

    def on_signal(self, sig: int) -> None:
        if sig == signal.SIGHUP and not self.is_headless:
            self._detach_terminal()
        if sig == signal.SIGHUP and self.after_hangup is not None and self.run_state.done is None:
            self.after_hangup(self.terminal_lost)  # output to the run's log; the trainer goes on
            self.exit_requested = True  # and the app leaves once it has finished
            return
        self._say(f"{signal.Signals(sig).name}: stopping")
        self.action_stop()

    def _detach_terminal(self) -> None:
        """The terminal is gone: keep running, silently, until the final files are written.

        Seen in tmux kill-session tests: Textual's writer thread dies on the first write to the
        hung-up tty (EIO) and, once its 30-write queue is full, the next screen update blocks the
        event loop for good; the SIGCONT that follows SIGHUP restarts "application mode" with new
        input threads; and a hung-up tty is always readable, so the input thread spins. Hence:
        no restarts, the input thread told to end, stdin/stdout/stderr on /dev/null, and a fresh
        writer thread."""
        self.terminal_lost = True
        driver = getattr(self, "_driver", None)
        if driver is not None:
            driver._auto_restart = False  # SIGCONT must not start application mode again
            exit_event = getattr(driver, "exit_event", None)
            if exit_event is not None:
                exit_event.set()  # the input thread ends at its next look at the (gone) tty
        for fd, mode in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
            null = os.open(os.devnull, mode)
            os.dup2(null, fd)
            os.close(null)
        if driver is not None and getattr(driver, "_writer_thread", None) is not None:
            from textual.drivers._writer_thread import WriterThread

            fresh = WriterThread(open(os.devnull, "w", encoding="utf-8"))
            fresh.start()
            driver._writer_thread = fresh

    def _handle_exception(self, error: Exception) -> None:
        # a bug in the app: Textual shows the traceback on exit; the run's log keeps it too
        log.error("the app failed", exc_info=error)
        if self.run_state.done is None:
            self.controller.stop()  # the worker thread must end, or the process cannot exit
        super()._handle_exception(error)

    def on_unmount(self) -> None:
        # an exit by any other road (an internal error included) still stops the trainer, so the
        # worker thread ends and the process can exit
        if self.run_state.done is None:
            self.controller.stop()


class WatchApp(TrainingApp):
    """The same screen over a run in another process: q closes the viewer, the run goes on."""

    BINDINGS = [Binding("q", "stop", "close", priority=True)]


def run_app(cfg, resume) -> int:
    """Train with the app on this terminal; return 0 when finished or stopped, 1 when failed."""
    from ..run import build_trainer
    from .feed import LiveFeed

    parts = build_trainer(cfg, resume)
    feed = LiveFeed(parts)
    app = TrainingApp(feed, feed.controller, ui_budget=cfg.ui_budget)
    if cfg.on_hangup == "continue":
        from ..detach import continue_app_after_hangup

        app.after_hangup = lambda redirect: continue_app_after_hangup(cfg.run_dir, redirect)
    code = app.run()
    if code is None:  # the app ended by an internal error (its traceback is printed)
        code = EXIT_FAILED
    if app.forced:  # the trainer thread may never return: leave without it
        print(f"neurogen-tui: left without waiting for the trainer at step {app.run_state.step}; "
              f"the last checkpoint in {cfg.checkpoint_dir} is the last good state", file=sys.stderr)
        sys.stdout.flush()
        os._exit(EXIT_FORCED)
    where = (f"files: {cfg.viz_dir}  checkpoints: {cfg.checkpoint_dir}  "
             f"log: {Path(cfg.run_dir) / 'neurogen-tui.log'}")
    result = app.run_state.result
    what = getattr(result, "reason", None) or app.run_state.state
    try:
        print(f"neurogen-tui: {what} at step {app.run_state.step}; {where}")
        if code and hasattr(result, "error"):
            print(f"neurogen-tui: error: {sanitize(result.error, 500)}", file=sys.stderr)
    except OSError:  # the terminal is gone (SIGHUP): the files are what matters
        pass
    return int(code)
