"""The one monitoring allowance (allowance.py) and the screen's use of it (tui/budget.py), with a fake
CPU counter, a fake clock and a fake machine load."""
from __future__ import annotations

import threading

import pytest

from neurogen_tui.core.allowance import Allowance
from neurogen_tui.core.machine import MachineLoad
from neurogen_tui.tui.budget import ScreenBudget


# ---- the allowance -----------------------------------------------------------------------------------
def test_work_that_cost_c_waits_for_c_over_the_share_of_training():
    a = Allowance(0.01)
    assert a.ready()  # the first piece of work never waits
    a.spend(0.05)  # a text sample, say
    assert not a.ready() and a.wait() == pytest.approx(5.0)
    a.earn(4.9)
    assert not a.ready()
    a.earn(0.2)
    assert a.ready() and a.balance == 0.0  # no bank: it does not save up beyond repaying
    assert a.spent == pytest.approx(0.05)


def test_a_bank_lets_the_first_work_after_a_quiet_spell_run_at_once_and_debt_is_bounded():
    a = Allowance(0.01, bank=0.25, max_debt=1.0)
    a.earn(1000.0)
    assert a.balance == 0.25
    a.spend(0.2)
    assert a.ready()  # still covered by the bank
    a.spend(100.0)
    assert a.balance == -1.0 and a.wait() == pytest.approx(100.0)
    a.refill()  # the work no longer competes with training: nothing owed
    assert a.ready() and a.balance == 0.25


def test_a_zero_share_never_waits():
    a = Allowance(0.0)
    a.spend(10.0)
    assert a.ready() and a.wait() == 0.0 and not a.limited and a.spent == 10.0


# ---- the screen --------------------------------------------------------------------------------------
class FakeLoad(MachineLoad):
    def __init__(self, busy: float) -> None:
        self.t = 0.0
        self.load = busy
        super().__init__(clock=lambda: self.t, cores=lambda: 2)

    def busy_cores(self) -> float:
        return self.load


class Fake:
    def __init__(self, busy: float) -> None:
        self.trained = 0.0
        self.cpu = 0.0
        self.load = FakeLoad(busy)

    def advance(self, seconds: float, training: bool = True) -> None:
        self.load.t += seconds
        if training:
            self.trained += seconds


def budget(share: float, busy: float, shares_gil: bool = False) -> tuple[ScreenBudget, Fake]:
    fake = Fake(busy)
    b = ScreenBudget(share, shares_gil, load=fake.load, cpu=lambda: fake.cpu)
    fake.cpu += 0.7  # the app's start, before the first tick: not charged
    b.tick(fake.trained)
    return b, fake


def test_a_spare_core_means_no_limit():
    b, fake = budget(0.01, busy=1.2)
    for _ in range(10):
        fake.advance(0.25)
        fake.cpu += 0.2  # 80% of a core: far over any share
        b.tick(fake.trained)
        assert not b.limited and b.ready()
    assert b.spent == pytest.approx(2.0)


def test_busy_cores_spend_from_an_allowance_that_grows_at_the_share_of_training():
    b, fake = budget(0.01, busy=1.9)
    fake.advance(0.25)
    b.tick(fake.trained)
    assert b.limited and b.ready()  # it starts with a full bank
    fake.cpu += 0.1  # a chart redraw
    fake.advance(0.25)
    b.tick(fake.trained)
    assert b.balance == pytest.approx(ScreenBudget.BANK + 0.0025 - 0.1)  # a full bank, the share of 0.25 s, the cost
    fake.cpu += 0.2  # and another, over the bank
    fake.advance(0.25)
    b.tick(fake.trained)
    assert not b.ready()
    wait = b.allowance.wait()
    assert wait == pytest.approx(-b.balance / 0.01)
    fake.advance(wait + 1e-3)  # that long of training: the allowance is repaid
    b.tick(fake.trained)
    assert b.ready()


def test_wall_time_without_training_earns_nothing():
    """One meaning for every allowance: a share of the training time, so a screen beside a run that
    is not training (between steps of a stalled data source, say) does not save up."""
    b, fake = budget(0.01, busy=1.9)
    fake.cpu += 0.5
    fake.advance(0.25)
    b.tick(fake.trained)
    owed = b.balance
    fake.advance(60.0, training=False)
    b.tick(fake.trained)
    assert b.balance == pytest.approx(owed) and not b.ready()


def test_work_on_other_threads_is_charged_too():
    b, fake = budget(0.01, busy=2.0)
    fake.advance(0.25)
    b.tick(fake.trained)
    start = b.balance
    threads = [threading.Thread(target=b.charge, args=(0.01,)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fake.advance(0.5)
    b.tick(fake.trained)
    assert b.balance == pytest.approx(min(ScreenBudget.BANK, start + 0.005 - 0.05))


def test_a_zero_share_never_limits():
    b, fake = budget(0.0, busy=2.0)
    fake.advance(1.0)
    fake.cpu += 1.0
    b.tick(fake.trained)
    assert fake.load.busy and not b.limited and b.ready()


def test_the_load_is_looked_at_once_a_second_and_the_limit_lifts_after_three_calm_looks():
    b, fake = budget(0.01, busy=2.0)
    fake.advance(0.25)
    b.tick(fake.trained)
    assert b.limited
    fake.load.load = 0.5
    fake.advance(0.25)
    b.tick(fake.trained)
    assert b.limited  # not looked at again yet
    for calm in range(1, MachineLoad.CALM_LOOKS + 1):
        fake.advance(1.0)
        b.tick(fake.trained)
        assert b.limited == (calm < MachineLoad.CALM_LOOKS)
    assert b.balance == ScreenBudget.BANK


def test_a_trainer_in_this_process_is_always_limited_and_never_looks_at_the_load():
    b, fake = budget(0.01, busy=0.1, shares_gil=True)
    fake.load.load = None  # looking would fail
    fake.advance(0.25)
    fake.cpu += 0.01
    b.tick(fake.trained)
    assert b.limited and b.spent == pytest.approx(0.01)


def test_the_first_tick_is_free_and_debt_is_bounded():
    b, fake = budget(0.01, busy=2.0)
    assert b.spent == 0.0 and b.balance == ScreenBudget.BANK  # the 0.7 s start was not charged
    fake.advance(0.25)
    fake.cpu += 5.0  # a pathological burst
    b.tick(fake.trained)
    assert b.balance == -ScreenBudget.MAX_DEBT and b.allowance.wait() == pytest.approx(ScreenBudget.MAX_DEBT / 0.01)


def test_nothing_is_limited_while_the_run_is_not_training():
    b, fake = budget(0.01, busy=2.0, shares_gil=True)
    fake.advance(0.25)
    fake.cpu += 0.5  # over the bank
    b.tick(fake.trained)
    assert b.limited and not b.ready()
    b.training = False  # paused, stopping or ended: the screen catches up at once
    fake.advance(0.25)
    b.tick(fake.trained)
    assert not b.limited and b.ready() and b.balance == ScreenBudget.BANK


@pytest.mark.parametrize("command", ["watch", "attach"])
def test_watch_and_attach_take_the_budget_flag(command, capsys):
    from neurogen_tui.cli import commands

    parser = getattr(commands, f"{command}_parser")()
    assert parser.parse_args(["run", "--ui-budget", "0"]).ui_budget == 0.0
    assert parser.parse_args(["run"]).ui_budget is None  # the app's default
    for bad in ("2", "-0.1", "lots"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["run", "--ui-budget", bad])
        assert exc.value.code == 2
    assert "--ui-budget" in capsys.readouterr().err


def test_samples_come_at_least_every_30_s_where_they_are_cheap_and_the_budget_is_said_once():
    from neurogen_tui.train.config import TrainingConfig
    from neurogen_tui.train.schedule import SAMPLE_FLOOR, Schedule

    def steps_until_due(cost: float, step_time: float) -> tuple[int, str]:
        sched = Schedule(TrainingConfig(sample_interval=1, sample_budget=0.005))
        assert sched.sample_due(1)
        sched.sampled(cost)
        notes, step = [], 1
        while True:
            step += 1
            sched.trained(step_time)
            if sched.sample_due(step):
                return step - 1, " ".join(notes)
            if sched.note:
                notes.append(sched.note)
                sched.note = ""

    # a slow CPU (0.3 s a sample): the budget alone would wait 60 s of training; the floor: 30 s
    steps, said = steps_until_due(0.3, 0.1)
    assert steps * 0.1 == pytest.approx(SAMPLE_FLOOR, abs=0.2)
    assert "takes 300 ms" in said and "--sample-budget 0" in said
    # a GPU box (50 ms a sample): the budget's 10 s, the floor never needed
    steps, _ = steps_until_due(0.05, 0.1)
    assert steps * 0.1 == pytest.approx(10.0, abs=0.2)
    # a sample too dear for the floor (1 s: 3% of 30 s) keeps to the budget: 200 s
    steps, said = steps_until_due(1.0, 0.5)
    assert steps * 0.5 == pytest.approx(200.0, abs=1.0) and said.count("text samples:") == 1
