"""The Textual app: one App showing the monitor screen over one run source (source.py).

The source's producer runs in a thread worker and never touches a widget: its events wait in the
source's queue until the drain timer (4 Hz) applies them as one batch, and the charts redraw on
their own slower timer (at most 2 Hz) from a reduced series. Where the screen's CPU costs training
it keeps to the --ui-budget share of it (budget.py): the header once a second, charts and samples
as the allowance permits; keys never wait. What the keys and signals do follows the source's
Capabilities. Stopping goes through the source and waits for its producer to finish, so the final
checkpoint and exports are on disk before the app exits.
"""
from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.reactive import var
from textual.worker import Worker, WorkerState

from ..notify.notice import terminal_alert
from ..run.layout import EXIT_FAILED, EXIT_FORCED, RunState
from . import chartsettings
from .budget import ScreenBudget
from .chartkeys import ChartKeys
from .dialogs import PromptScreen, SettingsScreen
from .screen import MonitorScreen
from .signals import TerminalSignals
from .source import RunSource, SourceDone
from .state import RunView
from .widgets import HelpScreen

log = logging.getLogger(__name__)
REQUEST_OF = {"pause": "pause", "checkpoint": "checkpoint", "draw": "draw", "prompt": "prompt", "settings": "set"}


class ChartsBuilt(Message):
    """Plot builds done in the charts' thread, ready to show."""

    def __init__(self, results: list, started: float, built: float) -> None:
        super().__init__()
        self.results, self.started, self.built = results, started, built


class MonitorApp(ChartKeys, TerminalSignals, App[int]):
    CSS_PATH = Path(__file__).with_name("app.tcss")
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    # every key is bound once here; check_action shows and enables those the source's capabilities allow
    BINDINGS = [
        Binding("p", "pause", "pause/resume"),
        Binding("c", "checkpoint", "checkpoint"),
        Binding("d", "draw", "dashboard"),
        Binding("q", "stop", "stop", priority=True),
        Binding("q", "close", "close", priority=True),
        Binding("x", "detach", "detach"),
        Binding("ctrl+c", "interrupt", "stop", show=False, priority=True),
        Binding("ctrl+q", "stop_or_close", "stop", show=False, priority=True),
        Binding("question_mark", "help", "help"),
        # the charts' keys (help lists them; the footer has no room at 80 columns)
        Binding("y", "chart_log", "log Y", show=False),
        Binding("s", "smoothing(1)", "smoother", show=False),
        Binding("S", "smoothing(-1)", "rougher", show=False),
        Binding("t", "x_axis", "X axis", show=False),
        Binding("z", "window", "window", show=False),
        Binding("0", "chart_reset", "reset charts", show=False),
        # the cockpit: talk to the model, change the live run
        Binding("g", "prompt", "prompt", show=False),
        Binding("e", "settings", "settings", show=False),
        Binding("escape", "back", "workspace", show=False),
    ]
    CHART_ACTIONS = {"chart_log", "smoothing", "x_axis", "window", "chart_reset"}
    # Keys do not wait for these timers; they only set how fresh the numbers on screen are.
    DRAIN_INTERVAL = 0.25  # seconds between applying queued events (header, log, samples)
    CHART_INTERVAL = 0.5  # seconds between chart redraws, at least
    CHART_DUTY = 0.03  # longest share of the UI thread the charts may take on long runs
    CHART_MAX_WAIT = 5.0  # seconds: even a slow machine sees its charts move
    FORCE_AFTER = 5.0  # seconds after a stop request before q can abandon a stop that hangs
    RING_EVERY = 10.0  # seconds: the terminal is told of a notice at most this often
    UI_BUDGET = 0.01  # share of training time the screen may use while it costs training (--ui-budget)
    BUSY_HEADER_INTERVAL = 1.0  # seconds between header updates while the budget applies
    BUSY_CHART_MAX_WAIT = 30.0  # seconds: the longest the budget holds back the charts and samples

    # var, not reactive: an App's reactive repaints the whole screen on each change (measured: a
    # full-screen update at every drain, ~28 ms each at 120x40, most of the UI's CPU)
    state: var[str] = var(RunState.STARTING)
    step: var[int] = var(0)

    def __init__(self, source: RunSource, ui_budget: float | None = None, on_hangup: str = "continue",
                 close_when_done: bool = False, back: bool = False) -> None:
        # NO_COLOR: Textual alone would only turn colours to greys; native ANSI colours let its
        # NoColor filter drop them altogether (app.tcss marks the state by reverse video instead)
        super().__init__(ansi_color=True if "NO_COLOR" in os.environ else None)
        self.source = source
        self.on_hangup = on_hangup
        self.close_when_done = close_when_done  # --test: the smoke run's screen closes when it ends
        self.back = back  # opened from the workspace: Esc goes back to it
        self.went_back = False
        self._caps_shown = source.caps
        self._end_said = False
        self._rung_at = -float("inf")
        self.rung: list[dict] = []  # the notices this screen told the terminal of
        self.run_state = RunView(source.title, read_only=not self.caps.control, run_dir=source.run_dir)
        self.monitor = MonitorScreen()
        self._started = False
        self.exit_requested = False
        self.forced = False  # left without waiting for the producer
        self.detached = False  # x or a hang-up closed the screen; the run goes on
        self.terminal_lost = False
        # the trainer in this process, SIGHUP with --on-hangup continue: called with terminal_lost
        # once the screen has left the dead terminal (session.run_app points output at the log)
        self.after_hangup = None
        self._stop_asked: list[float] = []
        self._chart_key: tuple = ()
        self._next_chart_at = 0.0
        self.chart_seconds = 0.0  # the last redraw's cost (data reduction + plot build)
        self.charts_building = False
        self._chart_update_seconds = 0.0
        self.budget = ScreenBudget(self.UI_BUDGET if ui_budget is None else ui_budget, shares_gil=self.caps.shares_gil)
        self._header_at = float("-inf")
        self._header_state = ""
        self._frozen = False
        self._charts_at = float("-inf")  # perf_counter time of the last chart redraw
        self.chart_settings, warning = chartsettings.load()
        if warning:
            self.run_state.log("warning", warning)
        self.run_state.charts = self.chart_settings.summary()
        self._charts_changed = False  # a key changed the settings: redraw now, whatever the timers say
        self._save_warned = False

    @property
    def caps(self):
        """The source's capabilities as they are now (an attached run says what it takes once it answers)."""
        return self.source.caps

    def get_default_screen(self) -> MonitorScreen:
        return self.monitor

    def on_mount(self) -> None:
        # once, however it is reached: Textual calls each class's on_mount, so a subclass that also
        # calls super() would otherwise start a second producer (two threads in one trainer)
        if self._started:
            return
        self._started = True
        self.title = f"neurogen-tui: {self.source.title}"
        self._install_signal_handlers()
        self.set_interval(self.DRAIN_INTERVAL, self.drain)
        self.set_interval(self.CHART_INTERVAL / 2, self.draw_charts)
        self.produce()

    @work(thread=True, exit_on_error=False, name="source")
    def produce(self) -> None:
        self.source.produce()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name == "source" and event.state == WorkerState.ERROR:
            self.run_state.log_exception("source", event.worker.error)
            self.source.put(SourceDone(EXIT_FAILED))

    # ---- timers ----------------------------------------------------------------------------
    def drain(self) -> None:
        """Apply every queued event as one batch, then update the widgets once."""
        rs, screen = self.run_state, self.monitor
        rs.apply_all(self.source.drain())
        # the allowance applies only while the run trains: paused, stopping or ended, the screen
        # costs it nothing and catches up at once
        streaming = rs.state in (RunState.RUNNING, RunState.WATCHING)
        self.budget.training = streaming and rs.done is None
        if len(rs.history):  # the screen's own start, and the wait for a first step, are free
            self.budget.tick(rs.trained)
        if not self._frozen and self.caps.shares_gil and rs.first_step is not None and rs.step > rs.first_step:
            # The trainer has taken its first step: the model, the data pipeline, the imports and
            # the screen are built. Move them out of the collector's full passes: one such pass took
            # 236 ms on the UI thread, holding the GIL the trainer needs (2-core VM, tiny model).
            self._frozen = True
            gc.collect()  # what is garbage now must not be frozen with the rest
            gc.freeze()
            self.budget.forget()  # a one-off for the whole process, not the screen's work
        for notice in rs.take_alerts():
            self.ring(notice)
        logs = rs.take_logs()
        if not self.terminal_lost and hasattr(screen, "header"):  # nobody sees a lost terminal's screen
            for line in logs:
                screen.log_pane.add(line)
            if not self.budget.limited:  # limited, the table comes with the charts
                # while samples stream in, once a second; the run's last ones show at once
                screen.samples_table.show(rs.table_samples(), rs.samples_version, throttle=streaming)
            now = time.monotonic()
            if (not self.budget.limited or logs or rs.state != self._header_state
                    or now - self._header_at >= self.BUSY_HEADER_INTERVAL):
                screen.header.info = rs.header()
                self._header_at, self._header_state = now, rs.state
        self.state, self.step = rs.state, rs.step
        if self.caps != self._caps_shown:  # an attached run said what it takes: the footer's keys follow
            self._caps_shown = self.caps
            self.refresh_bindings()
        if rs.done is not None and (self.exit_requested or self.close_when_done):
            self.exit(rs.done.exit_code, return_code=rs.done.exit_code)
        elif rs.done is not None and not self._end_said:  # ended without a q from here: ctl stop, another viewer
            self._end_said = True
            rs.log("info", f"the run has ended ({rs.state.lower()}); q closes this screen")  # shown next tick

    def draw_charts(self, force: bool = False) -> None:
        """Redraw the charts when the history or the size changed: new rows and captions here,
        the plot builds in a thread (one redraw in flight at a time). At most every
        CHART_INTERVAL, and never more than CHART_DUTY of the time (the last redraw's measured
        CPU cost), so a slow machine or a huge terminal degrades the charts' rate, not the keys.
        Where the screen's CPU costs training, a redraw (and the samples table with it) waits
        until the screen's allowance is repaid, or BUSY_CHART_MAX_WAIT has passed (so the charts
        keep moving even when the header alone spends the share); a new size never waits."""
        now = time.perf_counter()
        rs, screen = self.run_state, self.monitor
        key = (len(rs.history), self.size, len(rs.marks))
        if self.terminal_lost or self.charts_building or not (len(rs.history) or self._chart_key):
            return  # nothing drawn and nothing to draw yet: the first rows get the first redraw
        if not hasattr(screen, "charts"):
            return
        force = force or self._charts_changed or (bool(self._chart_key) and key[1:] != self._chart_key[1:])  # resized, marked
        if not force and (key == self._chart_key or now < self._next_chart_at):
            return
        if not force and not self.budget.ready() and now - self._charts_at < self.BUSY_CHART_MAX_WAIT:
            return  # the allowance comes first
        self._chart_key, self._charts_at, self._charts_changed = key, now, False
        cpu = time.thread_time()
        builds = [(panel, panel.prepare(rs.history, self.chart_settings, rs.marks)) for panel in screen.charts]
        if self.budget.limited:  # the samples table follows with the charts, within the same allowance
            screen.samples_table.show(rs.table_samples(), rs.samples_version, throttle=False)
        self._chart_update_seconds = time.thread_time() - cpu
        self.charts_building = True
        self.build_charts(builds, now)

    @work(thread=True, exit_on_error=False, group="charts")
    def build_charts(self, builds: list, started: float) -> None:
        t0 = time.thread_time()
        results = []
        try:
            results = [(panel, *build()) for panel, build in builds]  # each plot catches its own errors
        finally:
            cpu = time.thread_time() - t0
            self.budget.charge(cpu)
            # post_message is thread-safe and does not wait (call_from_thread would wait forever
            # for an app that closes meanwhile, and the process could not exit)
            self.post_message(ChartsBuilt(results, started, cpu))

    @on(ChartsBuilt)
    def _show_charts(self, message: ChartsBuilt) -> None:
        for panel, caption, text in message.results:
            panel.show(caption, text)
        self.charts_building = False
        self.chart_seconds = self._chart_update_seconds + message.built
        if self.budget.limited:  # the allowance spaces them out
            wait = self.CHART_INTERVAL
        else:
            wait = min(self.CHART_MAX_WAIT, max(self.CHART_INTERVAL, self.chart_seconds / self.CHART_DUTY))
        self._next_chart_at = message.started + wait

    def watch_state(self, state: str) -> None:
        self.refresh_bindings()

    # ---- keys ------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        caps = self.caps
        if action in ("stop", "close") and isinstance(self.screen, (PromptScreen, SettingsScreen)):
            return False  # q is a letter of the prompt being typed (Ctrl+Q and Ctrl+C still stop)
        if action in ("pause", "checkpoint", "draw", "prompt", "settings"):
            return caps.control and REQUEST_OF[action] in caps.can and self.run_state.done is None and (
                action in ("pause", "checkpoint", "draw") or self.screen is self.monitor)
        if action == "stop":
            return caps.control
        if action == "close":
            return not caps.control
        if action == "detach":
            return caps.detach
        if action in self.CHART_ACTIONS:
            return self.screen is self.monitor  # not under the help or a sample in full
        return True

    def ring(self, notice: dict) -> None:
        """A notice made while this screen is open: the terminal's bell and a desktop notification
        (notify.notice.terminal_alert), at most one every RING_EVERY seconds."""
        now = time.monotonic()
        if self.terminal_lost or now - self._rung_at < self.RING_EVERY:
            return
        self._rung_at = now
        self.rung.append(notice)
        if not self.is_headless and self._driver is not None:
            self._driver.write(terminal_alert(str(notice.get("title", "")), str(notice.get("text", "")),
                                              tmux=bool(os.environ.get("TMUX"))))

    def _say(self, text: str, level: str = "info") -> None:
        self.run_state.log(level, text)
        self.drain()

    def action_pause(self) -> None:
        self._say(self.source.toggle_pause())

    def action_checkpoint(self) -> None:
        self._say(self.source.checkpoint())

    def action_draw(self) -> None:
        self._say(self.source.draw())

    def action_prompt(self) -> None:
        def send(line: str | None) -> None:
            if line:
                self._say(self.source.prompt(line))

        self.push_screen(PromptScreen(), send)

    def action_settings(self) -> None:
        def send(texts: dict | None) -> None:
            if texts:
                self._say(self.source.set_settings(texts))
            elif texts is not None:  # Enter with nothing changed (Esc: None, nothing to say)
                self._say("settings: nothing changed")

        self.push_screen(SettingsScreen(self.source.settings()), send)

    def action_back(self) -> None:
        """Opened from the workspace: back to it (the run goes on; a viewer only closes)."""
        if self.back and self.screen is self.monitor:
            self.went_back = True
            self.source.close() if not self.caps.control else self.source.detach()
            self.exit(0)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        else:
            self.push_screen(HelpScreen(self.caps))

    def action_stop(self) -> None:
        """Stop the run (or, read-only, close the viewer) and exit once the producer has finished
        (at once if it already has). A stop that hangs (a stalled data source) can be abandoned:
        q three times, FORCE_AFTER apart."""
        now = time.monotonic()
        if self.run_state.done is not None:
            self.exit(self.run_state.done.exit_code, return_code=self.run_state.done.exit_code)
            return
        if not self.exit_requested:
            self.exit_requested, self._stop_asked = True, [now]
            if self.caps.control:
                self.run_state.set_state(RunState.STOPPING)
            self._say(self.source.stop())
            return
        self._stop_asked.append(now)
        if len(self._stop_asked) >= 3 and now - self._stop_asked[0] >= self.FORCE_AFTER:
            self.forced = True
            self.exit(EXIT_FORCED, return_code=EXIT_FORCED)
            return
        self._say(f"{self.source.stop()}; if it hangs, q twice more after {self.FORCE_AFTER:.0f}s "
                  f"leaves without the final files", "warning")

    def action_close(self) -> None:
        self.action_stop()

    def action_stop_or_close(self) -> None:
        self.action_stop()

    def action_detach(self) -> None:
        """Close the screen and leave the run going."""
        self.exit_requested = True
        if self.run_state.done is not None:
            self.exit(self.run_state.done.exit_code)
            return
        self.detached = True
        self._say("detaching: the run goes on")
        self.source.detach()

    def action_interrupt(self) -> None:
        """Ctrl+C: stops a run this screen owns, detaches from one it is attached to, closes a viewer."""
        if self.caps.owns or not self.caps.control:
            self.action_stop()
        else:
            self.action_detach()

    def _handle_exception(self, error: Exception) -> None:
        # a bug in the app: Textual shows the traceback on exit; the run's log keeps it too
        log.error("the app failed", exc_info=error)
        if self.run_state.done is None and not self.detached:
            self.source.close()  # the worker thread must end, or the process cannot exit
        super()._handle_exception(error)

    def on_unmount(self) -> None:
        # whatever ends the screen, the producer ends too: a trainer of this process stops (the
        # worker thread must end for the process to exit); a followed run goes on
        if self.run_state.done is None and not self.detached:
            self.source.close()
