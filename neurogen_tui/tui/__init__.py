"""The Textual app: one screen fed either by a live trainer or by a run directory's files (`watch`).

- `feed.py`: where the screen's events come from (LiveFeed, and WatchFeed in `watch.py`) and the
  controllers the keys talk to; nothing here touches a widget.
- `state.py`: RunState, what the screen shows, built from events; plain Python, tested directly.
- `widgets.py`: the header, charts, samples table, log pane and help screen.
- `app.py`: the short App subclass (keys, timers) and `run_app(cfg, resume)`.
"""
