"""The screen's CPU allowance (tui/budget.py) with a fake clock, CPU counter and machine load."""
from __future__ import annotations

import threading

import pytest

from neurogen_tui.tui.budget import ScreenBudget


class Fake:
    def __init__(self, busy: float) -> None:
        self.t = 0.0
        self.cpu = 0.0
        self.busy = busy

    def busy_cores(self) -> float:
        return self.busy


def budget(share: float, busy: float, shares_gil: bool = False) -> tuple[ScreenBudget, Fake]:
    fake = Fake(busy)
    b = ScreenBudget(share, shares_gil, load=fake, cores=lambda: 2, clock=lambda: fake.t, cpu=lambda: fake.cpu)
    fake.cpu += 0.7  # the app's start, before the first tick: not charged
    b.tick()
    return b, fake


def test_a_spare_core_means_no_limit():
    b, fake = budget(0.01, busy=1.2)
    for _ in range(10):
        fake.t += 0.25
        fake.cpu += 0.2  # 80% of a core: far over any share
        b.tick()
        assert not b.limited and b.allows(10.0) and b.wait_for(10.0) == 0.0
    assert b.spent == pytest.approx(2.0)


def test_busy_cores_spend_from_an_allowance_that_grows_at_the_share():
    b, fake = budget(0.01, busy=1.9)
    fake.t += 0.25
    b.tick()
    assert b.limited and b.allows(0.1)  # it starts with a full bank
    fake.cpu += 0.1  # a chart redraw
    fake.t += 0.25
    b.tick()
    assert b.balance == pytest.approx(ScreenBudget.CAP + 0.0025 - 0.1)  # a full bank, a quarter second's share, the cost
    fake.cpu += 0.2  # and another, over the bank
    fake.t += 0.25
    b.tick()
    assert not b.allows(0.1) and b.allows(0.0) is False
    wait = b.wait_for(0.1)
    assert wait == pytest.approx((0.1 - b.balance) / 0.01)
    fake.t += wait + 1e-6  # idle that long: the allowance has grown back to the cost
    b.tick()
    assert b.allows(0.1) and not b.allows(0.1 + 1e-3)


def test_work_on_other_threads_is_charged_too():
    b, fake = budget(0.01, busy=2.0)
    fake.t += 0.25
    b.tick()
    start = b.balance
    threads = [threading.Thread(target=b.charge, args=(0.01,)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fake.t += 0.5
    b.tick()
    assert b.balance == pytest.approx(min(ScreenBudget.CAP, start + 0.005 - 0.05))


def test_a_zero_share_never_limits():
    b, fake = budget(0.0, busy=2.0)
    fake.t += 1.0
    fake.cpu += 1.0
    b.tick()
    assert b.busy and not b.limited and b.allows(5.0)


def test_the_load_is_looked_at_once_a_second_and_the_limit_lifts_after_three_calm_looks():
    b, fake = budget(0.01, busy=2.0)
    fake.t += 0.25
    b.tick()
    assert b.limited
    fake.busy = 0.5
    fake.t += 0.25
    b.tick()
    assert b.limited  # not looked at again yet
    for calm in range(1, ScreenBudget.CALM_LOOKS + 1):
        fake.t += 1.0
        b.tick()
        assert b.limited == (calm < ScreenBudget.CALM_LOOKS)
    assert b.balance == ScreenBudget.CAP


def test_a_trainer_in_this_process_is_always_limited_and_never_looks_at_the_load():
    b, fake = budget(0.01, busy=0.1, shares_gil=True)
    fake.busy = None  # looking would fail
    fake.t += 0.25
    fake.cpu += 0.01
    b.tick()
    assert b.limited and b.spent == pytest.approx(0.01)


def test_the_first_tick_is_free_and_debt_is_bounded():
    b, fake = budget(0.01, busy=2.0)
    assert b.spent == 0.0 and b.balance == ScreenBudget.CAP  # the 0.7 s start was not charged
    fake.t += 0.25
    fake.cpu += 5.0  # a pathological burst
    b.tick()
    assert b.balance == -ScreenBudget.DEBT and b.wait_for(0.05) == pytest.approx((0.05 + ScreenBudget.DEBT) / 0.01)


def test_nothing_is_limited_while_the_run_is_not_training():
    b, fake = budget(0.01, busy=2.0, shares_gil=True)
    fake.t += 0.25
    fake.cpu += 0.5  # over the bank
    b.tick()
    assert b.limited and not b.allows(0.1)
    b.training = False  # paused, stopping or ended: the screen catches up at once
    fake.t += 0.25
    b.tick()
    assert not b.limited and b.allows(0.1) and b.balance == ScreenBudget.CAP


@pytest.mark.parametrize("command", ["watch", "attach"])
def test_watch_and_attach_take_the_budget_flag(command, capsys):
    import importlib

    parser = importlib.import_module(f"neurogen_tui.tui.{command}").build_parser()
    assert parser.parse_args(["run", "--ui-budget", "0"]).ui_budget == 0.0
    assert parser.parse_args(["run"]).ui_budget is None  # the app's default
    for bad in ("2", "-0.1", "lots"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["run", "--ui-budget", bad])
        assert exc.value.code == 2
    assert "--ui-budget" in capsys.readouterr().err
