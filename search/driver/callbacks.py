"""The driver's Ray Tune callbacks: the one writer to MLflow, and the sweep's failure limit.

`TrackingCallback` mirrors Tune's trial events into MLflow (one child run per trial), keeps
the front's artifacts current and prints a line per trial; `FailureLimit` stops the sweep
once too many trials failed. Both run in the driver's process. Imports Ray.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from search.console import echo
from search.driver.progress import SweepStatus, TrialStep
from search.front.rows import trial_metrics
from search.record.front_log import update_front
from search.record.tracker import Tracker
from search.space.config import SweepConfig
from search.space.suggest import InfeasibleError, plan


def _tune_base(name: str) -> type:
    import ray.tune

    return getattr(ray.tune, name)


# The live callback of each sweep in this process. Tune pickles its callbacks into the
# experiment state; a restored experiment must reach the new process's callback (with its
# own MLflow client and failure limit), not a stale copy, so a callback pickles as its name.
_LIVE: dict[str, TrackingCallback] = {}


def _live_callback(sweep: str) -> TrackingCallback:
    return _LIVE[sweep]


class TrackingCallback(_tune_base("Callback")):
    """Mirrors Ray Tune's trial events into MLflow and keeps the Pareto artifacts current.

    Args:
        finished_before: trials of a resumed sweep that had finished; their events (a replay
            of their record) write nothing.
        earlier: for a sweep extended with more trials, the outcomes of the trials it ran
            before (counted in the progress view; their Tune experiment is over).
    """

    def __init__(
        self,
        tracker: Tracker,
        config: SweepConfig,
        parent_layers: tuple[int, int],
        parent_params: int,
        progress: bool,
        sweep: str,
        finished_before: Iterable[str] = (),
        earlier: Counter[str] | None = None,
    ) -> None:
        self.tracker = tracker
        self.config = config
        self.parent_layers = parent_layers
        self.parent_params = parent_params
        self.progress = progress
        self.sweep = sweep
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id
        self.started: dict[str, float] = {}
        self.failures: Counter[str] = Counter()  # last line of each error -> count
        self.finished_before = set(finished_before)
        # Proposals refused before training, numbered on from a resumed sweep's.
        self.infeasible = len(tracker.trials.rows("infeasible"))
        # What the progress view shows besides the trials' steps (`status`).
        self.outcomes: Counter[str] = Counter(finished=len(self.finished_before))
        self.outcomes.update(earlier or {})
        self.ended: set[str] = set(self.finished_before)
        self.front_size, self.hypervolume = 0, 0.0
        self.slots = 1  # trials that run at once; set by the tuner
        self.before_end: Callable[[str], None] | None = None  # the progress view's, if shown
        _LIVE[sweep] = self

    def __reduce__(self) -> tuple:
        return (_live_callback, (self.sweep,))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.finished_before:
            return
        params = dict(trial.config)
        try:
            planned = plan(params, self.parent_layers)
            params.update(
                encoder_layers=planned.encoder_layers, decoder_layers=planned.decoder_layers
            )
            params.update(encoder=len(planned.encoder_layers), decoder=len(planned.decoder_layers))
        except InfeasibleError:
            pass  # the trial itself fails with the reason
        self.runs[trial.trial_id] = self.tracker.trials.start(trial.trial_id, params, {})
        self.started[trial.trial_id] = time.monotonic()
        e, d = params.get("encoder", "?"), params.get("decoder", "?")
        echo(self.progress, f"trial {trial.trial_id} started: {e}+{d} {params.get('strategy', '')}")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if trial.trial_id in self.finished_before:
            return  # replayed from its own record: nothing new
        run_id = self._run(trial)
        step = int(result.get("step", 0))
        self.tracker.trials.log_metrics(run_id, trial_metrics(result), step=step)
        where = {k: str(result[k]) for k in ("node", "node_ip") if result.get(k)}
        if where:  # node: the Ray node id the trial reports; one machine's nodes share an IP
            self.tracker.trials.set_tags(run_id, where)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.finished_before:
            return
        run_id = self._run(trial)
        result = trial.last_result or {}
        if not result.get("final"):  # stopped early by the scheduler, or by the sweep's end
            step = int(result.get("step", 0))
            self.tracker.trials.set_tags(run_id, {"stopped_at_step": str(step)})
            self.tracker.trials.end(run_id, "stopped")
            self._after(trial, "stopped", f"early, at step {result.get('step', 0)}")
            return
        if result.get("weights"):  # where the driver's receiver wrote them
            self.tracker.trials.set_tags(run_id, {"checkpoint": str(result["weights"])})
        self.tracker.trials.end(run_id, "finished")
        self._after(trial, "finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _error_text(trial)
        self.failures[_error_summary(error)] += 1
        self.tracker.trials.end(self._run(trial), "failed", error=error)
        self._after(trial, "failed", _error_summary(error))

    def record_infeasible(
        self, proposal: dict[str, Any], known: dict[str, float], why: str
    ) -> None:
        """Record a proposal the searcher refused before training (`search.strategy.searcher`)."""
        self.infeasible += 1
        name = f"infeasible_{self.infeasible}"
        params = dict(proposal)
        try:
            planned = plan(params, self.parent_layers)
            params.update(encoder=len(planned.encoder_layers), decoder=len(planned.decoder_layers))
        except InfeasibleError:
            pass
        run_id = self.tracker.trials.start(name, params, {"infeasible_because": why})
        self.tracker.trials.log_metrics(run_id, known, step=0)
        self.tracker.trials.end(run_id, "infeasible")
        echo(self.progress, f"proposal {name} infeasible, not trained | {why}")

    def status(self, steps: dict[str, TrialStep]) -> SweepStatus:
        """The sweep as the progress view shows it, given the trials' latest steps."""
        running = {trial: step for trial, step in steps.items() if trial not in self.ended}
        outcomes = {o: self.outcomes[o] for o in ("finished", "stopped", "failed")}
        return SweepStatus(
            running, outcomes, self.config.trials, self.front_size, self.hypervolume, self.slots
        )

    def refresh_front(self) -> tuple[list[dict[str, Any]], float]:
        """Recompute and log the front (`update_front`), and keep its size and hypervolume
        for the progress view."""
        rows, hv = update_front(self.tracker, self.config, self.parent_params)
        self.front_size, self.hypervolume = sum(r["on_front"] for r in rows), hv
        return rows, hv

    def failure_message(self) -> str:
        """How many trials failed, and the most common error with its count."""
        ((error, count),) = self.failures.most_common(1)
        total = self.failures.total()
        return f"stopped after {total} failed trials; most common error ({count}x): {error}"

    def _run(self, trial: Any) -> str:
        if trial.trial_id not in self.runs:  # a trial that started before a resume
            self.runs[trial.trial_id] = self.tracker.trials.start(trial.trial_id, trial.config, {})
        return self.runs[trial.trial_id]

    def _after(self, trial: Any, outcome: str, detail: str = "") -> None:
        if self.before_end is not None:
            self.before_end(trial.trial_id)
        self.outcomes[outcome] += 1
        self.ended.add(trial.trial_id)
        rows, hv = self.refresh_front()
        done = sum(
            r["outcome"] not in ("running", "infeasible") for r in self.tracker.trials.rows(None)
        )
        seconds = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
        line = f"[{done}/{self.config.trials}] trial {trial.trial_id} {outcome} in {seconds:.0f}s"
        if outcome == "finished":
            result = trial.last_result or {}
            line += " | " + ", ".join(
                f"{o.metric} {_short(result.get(o.metric))}" for o in self.config.objectives
            )
        else:
            line += f" | {detail}"
        line += f" | front {sum(r['on_front'] for r in rows)} of {len(rows)}, hypervolume {hv:.4g}"
        echo(self.progress, line)


class FailureLimit(_tune_base("Stopper")):
    """Stops the whole sweep once `limit` trials have failed (--max-failures)."""

    def __init__(self, callback: TrackingCallback, limit: int) -> None:
        self.callback = callback
        self.limit = limit

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.callback.failures.total() >= self.limit


def _error_text(trial: Any) -> str:
    path = Path(trial.error_file) if trial.error_file else None
    if path and path.is_file():
        return path.read_text()[-5000:]
    return str(trial.get_error() or "the trial failed without an error message")


def _error_summary(text: str) -> str:
    """One line for an error: the last `SomethingError: ...` line of its traceback, else the
    first line of Ray's report (a killed worker has no traceback)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b", line):
            return line[:300]
    described = [line for line in lines if not line.startswith("Failure #")]
    return described[0][:300] if described else "unknown error"


def _short(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "?"
    if abs(value) >= 1e5:
        return f"{value / 1e6:.2f}M"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.2f}"
