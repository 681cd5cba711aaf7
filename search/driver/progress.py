"""What a running sweep shows: each running trial's step and loss, the trials by outcome, an ETA
and the front.

Trials tell a `ProgressBoard` actor on the driver's node their step through Ray (a call every
few seconds, not a Tune result, so schedulers and searchers never see it); the driver reads the
board once a second. On a terminal the view is a live table (rich: maintained, already in the
dependency tree, and its `Live` keeps the trial-end lines printed above the table); otherwise
(a pipe, a log file, CI) a plain line at most every `PLAIN_SECONDS`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PLAIN_SECONDS = 30.0  # between status lines when the output is not a terminal
REFRESH_SECONDS = 1.0  # between reads of the board
STEP_SECONDS = 2.0  # a trial tells the board its step at most this often


@dataclass(frozen=True)
class TrialStep:
    """Where one running trial is."""

    label: str  # the student, e.g. "2+3 sft"
    step: int
    total: int
    loss: float
    seconds: float  # since the trial started (its start-up included)
    rate: float = 0.0  # optimizer steps per second since the first step; 0 until known


@dataclass(frozen=True)
class SweepStatus:
    """The sweep at one moment, as the view shows it."""

    running: Mapping[str, TrialStep]
    outcomes: Mapping[str, int]  # finished, failed, stopped: trials that ended so
    trials: int  # the sweep's budget of trials
    front_size: int
    hypervolume: float
    slots: int  # trials that run at once

    @property
    def waiting(self) -> int:
        """Trials not started yet."""
        return max(0, self.trials - sum(self.outcomes.values()) - len(self.running))


class ProgressBoard:
    """The latest step of every trial, as the trials tell it (a Ray actor on the driver's node)."""

    def __init__(self) -> None:
        self.trials: dict[str, TrialStep] = {}

    def step(self, trial_id: str, step: TrialStep) -> None:
        self.trials[trial_id] = step

    def snapshot(self) -> dict[str, TrialStep]:
        return dict(self.trials)


def step_reporter(board: Any, trial_id: str, label: str) -> Callable[[int, int, float], None]:
    """A trial's `on_step`: sends (step, total, loss) to the board every `STEP_SECONDS`, and
    at the first and the last step."""
    started = time.monotonic()
    first = last = -STEP_SECONDS  # seconds at the first step, at the last report

    def on_step(step: int, total: int, loss: float) -> None:
        nonlocal first, last
        now = time.monotonic() - started
        if step == 1:
            first = now
        if step in (1, total) or now - last >= STEP_SECONDS:
            last = now
            rate = (step - 1) / (now - first) if step > 1 and now > first else 0.0
            board.step.remote(trial_id, TrialStep(label, step, total, loss, now, rate))

    return on_step


def eta_seconds(status: SweepStatus) -> float | None:
    """Seconds until every trial has run its whole budget at the running trials' step rate;
    early stopping only makes it shorter. None until a trial has taken steps."""
    rates = [t.rate for t in status.running.values() if t.rate > 0]
    if not rates:
        return None
    budget = max(t.total for t in status.running.values())
    steps_left = sum(t.total - t.step for t in status.running.values())
    steps_left += status.waiting * budget
    at_once = max(1, min(status.slots, len(status.running) + status.waiting))
    return steps_left / (sum(rates) / len(rates) * at_once)


def duration(seconds: float | None) -> str:
    """Seconds as "42s", "7m05s" or "1h02m"; "?" when unknown."""
    if seconds is None:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def summary_line(status: SweepStatus) -> str:
    """Counts, front and ETA in one line."""
    ended = ", ".join(f"{n} {outcome}" for outcome, n in status.outcomes.items() if n)
    parts = [f"{len(status.running)} running", ended, f"{status.waiting} waiting"]
    front = f"front {status.front_size}, hypervolume {status.hypervolume:.4g}"
    eta = f"ETA {duration(eta_seconds(status))}"
    return " | ".join([", ".join(p for p in parts if p), front, eta])


def trial_cell(trial_id: str, step: TrialStep) -> str:
    return f"{trial_id} {step.label} step {step.step}/{step.total} loss {step.loss:.3f}"


def plain_line(status: SweepStatus) -> str:
    """The status as one line of text: each running trial, then the summary."""
    trials = "; ".join(trial_cell(i, s) for i, s in sorted(status.running.items()))
    return f"[{time.strftime('%H:%M:%S')}] {trials + ' | ' if trials else ''}{summary_line(status)}"


def status_table(status: SweepStatus) -> Any:
    """The status as a rich table: a row per running trial, the summary as its caption."""
    from rich.table import Table

    table = Table(caption=summary_line(status), caption_justify="left", expand=False)
    for column in ("trial", "student", "step", "loss", "time"):
        table.add_column(column, justify="left" if column in ("trial", "student") else "right")
    for trial_id, step in sorted(status.running.items()):
        table.add_row(
            trial_id,
            step.label,
            f"{step.step}/{step.total}",
            f"{step.loss:.3f}",
            duration(step.seconds),
        )
    return table


class ProgressView:
    """Shows the sweep until the `with` block ends: a live table on a terminal, else plain
    lines at most every `PLAIN_SECONDS` (and one more as soon as an ETA is known).

    Args:
        read_steps: the trials' latest steps (the board's snapshot); may raise, which costs
            only that refresh: a view must never break the sweep.
        status: the driver's side (outcomes, front) around those steps.
        console: where to show it (a rich `Console`); default stdout.
    """

    def __init__(
        self,
        read_steps: Callable[[], dict[str, TrialStep]],
        status: Callable[[dict[str, TrialStep]], SweepStatus],
        console: Any = None,
    ) -> None:
        from rich.console import Console

        self.read_steps = read_steps
        self.status = status
        self.console = console or Console()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._shown: set[str] = set()  # trials a plain line has shown
        self._eta_shown = False  # whether a plain line has shown an ETA

    def __enter__(self) -> ProgressView:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _read(self) -> SweepStatus:
        try:
            steps = self.read_steps()
        except Exception:  # Ray shutting down, a slow answer: skip the trials this once
            steps = {}
        return self.status(steps)

    def _run(self) -> None:
        if self.console.is_terminal:
            self._run_live()
            return
        printed = -PLAIN_SECONDS
        while not self._stop.wait(REFRESH_SECONDS):
            status = self._read()
            now = time.monotonic()
            if status.running and (now - printed >= PLAIN_SECONDS or self._first_eta(status)):
                printed = now
                self._print(status)

    def trial_ending(self, trial_id: str) -> None:
        """Called as a trial ends, before its line: off a terminal, a trial that ended between
        two plain lines gets one now, so every trial's steps are shown before its end; so does
        one whose steps give the first ETA (a short trial can end between two reads)."""
        if self.console.is_terminal:
            return
        status = self._read()
        if trial_id in status.running and (trial_id not in self._shown or self._first_eta(status)):
            self._print(status)

    def _first_eta(self, status: SweepStatus) -> bool:
        return not self._eta_shown and eta_seconds(status) is not None

    def _print(self, status: SweepStatus) -> None:
        self._shown.update(status.running)
        self._eta_shown = self._eta_shown or eta_seconds(status) is not None
        print(plain_line(status), flush=True)

    def _run_live(self) -> None:
        from rich.live import Live

        with Live(console=self.console, refresh_per_second=2, transient=True) as live:
            while not self._stop.wait(REFRESH_SECONDS):
                live.update(status_table(self._read()))
