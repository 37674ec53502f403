"""Notifications: what is worth telling a researcher who is not watching (a run finished, failed,
diverged, stalled, its disk filling), said where they are (a webhook: Slack, Discord, ntfy or any
JSON endpoint; a command; the terminal of a watching app), from threads of their own, rate-limited,
never at training's expense, with every secret in a URL masked."""
