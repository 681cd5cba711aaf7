"""The sweep's progress view (`search.driver.progress`): the ETA and lines it shows, what a trial
tells the board, and the live table on a terminal. The view in a real sweep, its output to a
pipe, is checked in test_sweep.py."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from search.driver import progress
from search.driver.progress import (
    ProgressView,
    SweepStatus,
    TrialStep,
    duration,
    eta_seconds,
    plain_line,
    step_reporter,
)

RUNNING = {
    "a1": TrialStep("2+3 sft", step=100, total=500, loss=4.25, seconds=60.0, rate=2.0),
    "b2": TrialStep("6+6 sft", step=300, total=500, loss=3.5, seconds=160.0, rate=2.0),
}


def status(running=RUNNING, finished=1, trials=6, slots=2) -> SweepStatus:
    outcomes = {"finished": finished, "stopped": 0, "failed": 0}
    return SweepStatus(running, outcomes, trials, front_size=1, hypervolume=3.3e7, slots=slots)


def test_eta_is_the_steps_left_at_the_running_trials_rate():
    # 400 + 200 steps left in the running trials, 3 trials of 500 waiting, 2 at 2 steps/s.
    assert eta_seconds(status()) == pytest.approx((400 + 200 + 3 * 500) / (2 * 2.0))
    # One slot: one trial at a time.
    assert eta_seconds(status(slots=1)) == pytest.approx(2100 / 2.0)
    assert eta_seconds(status(running={})) is None
    unknown = {"a1": TrialStep("2+3 sft", 1, 500, 6.0, 30.0)}  # first step: no rate yet
    assert eta_seconds(status(running=unknown)) is None


def test_the_plain_line_names_every_running_trial_the_counts_and_the_eta():
    line = plain_line(status())
    assert "a1 2+3 sft step 100/500 loss 4.250; b2 6+6 sft step 300/500 loss 3.500" in line
    assert "2 running, 1 finished, 3 waiting | front 1, hypervolume 3.3e+07 | ETA 8m45s" in line


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "?"), (42.4, "42s"), (425, "7m05s"), (3725, "1h02m")]
)
def test_durations_read_at_a_glance(seconds, text):
    assert duration(seconds) == text


class FakeBoard:
    """A `ProgressBoard` handle: what `.step.remote(...)` was told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, TrialStep]] = []
        self.step = self
        self.remote = lambda trial_id, step: self.told.append((trial_id, step))


def test_a_trial_tells_the_first_and_last_step_and_otherwise_every_few_seconds(monkeypatch):
    clock = iter([0.0, 1.0, 1.5, 2.0, 5.0, 5.5, 6.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    board = FakeBoard()
    on_step = step_reporter(board, "a1", "2+3 sft")  # starts the clock at 0
    for step in range(1, 7):
        on_step(step, 6, 5.0 - step / 10)
    told = [(s.step, s.seconds, s.rate) for _, s in board.told]
    # Step 1 at 1.0 s; steps 2 and 3 within 2 s of it; step 4 at 5.0 s (3 steps in 4 s); the last.
    assert told == [(1, 1.0, 0.0), (4, 5.0, 0.75), (6, 6.0, 1.0)]
    assert {trial for trial, _ in board.told} == {"a1"}


def test_on_a_terminal_the_view_is_a_live_table():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with ProgressView(lambda: dict(RUNNING), lambda steps: status(running=steps), console):
        time.sleep(2.5)
    shown = out.getvalue()
    assert "2+3 sft" in shown and "100/500" in shown and "6+6 sft" in shown
    assert "ETA 8m45s" in shown
    assert "\x1b[" in shown  # drawn with terminal control codes, not as plain lines


def test_off_a_terminal_it_prints_plain_lines_and_survives_a_failing_board(capsys):
    calls = []

    def read_steps():
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError("the board did not answer")
        return dict(RUNNING)

    console = Console(file=io.StringIO(), force_terminal=False)
    with ProgressView(read_steps, lambda steps: status(running=steps), console):
        time.sleep(2.5)
    lines = capsys.readouterr().out.splitlines()
    assert len(calls) >= 2
    assert len(lines) == 1  # at most one line per PLAIN_SECONDS
    assert lines[0].endswith("| front 1, hypervolume 3.3e+07 | ETA 8m45s")


def test_off_a_terminal_a_trial_ending_between_lines_is_shown_first(capsys):
    console = Console(file=io.StringIO(), force_terminal=False)
    view = ProgressView(lambda: dict(RUNNING), lambda steps: status(running=steps), console)
    view.trial_ending("a1")  # ended before the view's first line: shown now
    view.trial_ending("a1")  # once is enough
    view.trial_ending("gone")  # not on the board: nothing to show
    (line,) = capsys.readouterr().out.splitlines()
    assert "a1 2+3 sft step 100/500" in line


def test_off_a_terminal_a_short_trial_ending_with_the_first_rate_shows_the_eta(capsys):
    """A trial can take all its steps between two reads of the board: shown at its first step
    (no rate, "ETA ?"), it ends with a rate, and its end gives the ETA line that was missed."""
    first = {"a1": TrialStep("2+3 sft", step=1, total=8, loss=5.0, seconds=0.1, rate=0.0)}
    last = {"a1": TrialStep("2+3 sft", step=8, total=8, loss=4.0, seconds=0.8, rate=10.0)}
    board = [first]
    console = Console(file=io.StringIO(), force_terminal=False)
    view = ProgressView(lambda: dict(board[-1]), lambda steps: status(running=steps), console)
    view.trial_ending("a1")  # before any line: shown, at step 1
    board.append(last)
    view.trial_ending("a1")  # shown already, but its rate gives the first ETA
    view.trial_ending("a1")  # the ETA is out: nothing more
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "step 1/8" in lines[0] and lines[0].endswith("ETA ?")
    assert "step 8/8" in lines[1] and re.search(r"\| ETA (\d+m)?\d+s$", lines[1])
