"""Which runs a person means: a small filter language over runs' names, states and configs (the
workspace's `f`, `compare DIR --filter`), and the keys in which runs differ (the config diff).

    lr>=1e-3 model=small -name:debug      runs whose config has lr >= 0.001 and model "small", whose
                                          name does not match "debug"
    sweep-.*                              a bare word is a regular expression over the name
    state:running  cfg.seed=3  step>1000  the state, a config key (LEET's `cfg.` accepted), the step

Terms are ANDed; `-` negates one. A comparison of a key a run lacks is false for it (so `-lr>1`
keeps the runs without an lr). Numbers compare as numbers, anything else as text.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

OPS = (">=", "<=", "!=", ">", "<", "=")
_TERM = re.compile(r"^(-?)([A-Za-z_][\w./-]*)(>=|<=|!=|>|<|=|:)(.*)$")


class QueryError(ValueError):
    """A filter that cannot be read; the message says which term."""


def _number(text):
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(str(text))
    except ValueError:
        return None


def _compare(have, op: str, want: str) -> bool:
    a, b = _number(have), _number(want)
    if a is not None and b is not None:
        if math.isnan(a):
            return False
        return {">=": a >= b, "<=": a <= b, "!=": a != b, ">": a > b, "<": a < b, "=": a == b}[op]
    if op in ("=", "!="):
        return (str(have) == want) == (op == "=")
    return False


@dataclass(frozen=True)
class Term:
    negate: bool
    key: str  # "name" for a bare word
    op: str  # one of OPS, or ":" (a regular expression)
    value: str
    pattern: re.Pattern | None = None

    def matches(self, run: dict) -> bool:
        got = self._test(run)
        return not got if self.negate else got

    def _test(self, run: dict) -> bool:
        if self.key in ("name", "state") and self.op in (":", "=", "!="):
            text = str(run.get(self.key) or "")
            if self.op == ":":
                return bool(self.pattern.search(text))
            return (text == self.value) == (self.op == "=")
        if self.key in ("step", "loss"):
            return run.get(self.key) is not None and _compare(run[self.key], self.op, self.value)
        config = run.get("config") or {}
        key = self.key[4:] if self.key.startswith("cfg.") else self.key
        if key not in config:
            return False
        if self.op == ":":
            return bool(self.pattern.search(str(config[key])))
        return _compare(config[key], self.op, self.value)


def parse(query: str) -> list[Term]:
    """The terms of a filter; QueryError with the term that cannot be read."""
    terms = []
    for word in query.split():
        m = _TERM.match(word)
        if m:
            negate, key, op, value = m.groups()
        else:
            negate, key, op, value = ("-", "name", ":", word[1:]) if word.startswith("-") else ("", "name", ":", word)
        pattern = None
        if op == ":":
            try:
                pattern = re.compile(value, re.IGNORECASE)
            except re.error as exc:
                raise QueryError(f"{word!r}: not a regular expression ({exc})") from None
        elif not value:
            raise QueryError(f"{word!r}: nothing to compare with")
        terms.append(Term(bool(negate), key, op, value, pattern))
    return terms


def select(runs: list[dict], query: str) -> list[dict]:
    """The runs (ls's summaries: name, state, step, loss, config) the filter keeps, in their order."""
    terms = parse(query)
    return [r for r in runs if all(t.matches(r) for t in terms)]


def differing_keys(configs: list[dict]) -> list[str]:
    """The config keys whose values are not the same in every one of `configs` (a key some lack
    differs too), in the order they first appear."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    if len(configs) < 2:
        return []
    return [k for k in keys if len({repr(c.get(k, "<none>")) for c in configs}) > 1]


def groups(runs: list[dict], key: str) -> dict[tuple, list[dict]]:
    """Runs that differ only in `key` (its seed, say) and in what they logged, as one group each,
    keyed by their values of the other keys in which the runs differ."""
    other = [k for k in differing_keys([r.get("config") or {} for r in runs]) if k != key]
    out: dict[tuple, list[dict]] = {}
    for run in runs:
        config = run.get("config") or {}
        out.setdefault(tuple((k, repr(config.get(k))) for k in other), []).append(run)
    return out


def group_label(values: tuple) -> str:
    return " ".join(f"{k}={v}" for k, v in values) or "all"
