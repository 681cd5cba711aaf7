"""The sweep driver: check everything, prepare data once, let Ray Tune run Optuna's proposals.

Ray Tune schedules the trials (concurrency follows `resources`; `--address` joins a cluster),
Optuna proposes them through Ray's `OptunaSearch` with the objectives as a list, and a Tune
callback in this process is the only writer to MLflow.
"""

from __future__ import annotations

import csv
import functools
import re
import secrets
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from search.config import METRICS, ConfigError, SweepConfig, config_from_dict
from search.pareto import hypervolume, pareto_front
from search.plot import pareto_figure, write_pareto_html
from search.preflight import (
    Prepared,
    check_inputs,
    check_ray_address,
    check_resources,
    prepare,
)
from search.space import InfeasibleError, grid, plan, suggest
from search.tracking import (
    Tracker,
    check_store,
    check_study_storage,
    resolve_uri,
    shown_url,
    store_lock,
)
from search.weights import start_receiver
from trainables.trial import tune_trial

SPACE_FILE = "space.yaml"  # the sweep's own configuration, kept on its parent run

# Metrics a trial reports that are logged to MLflow (Ray adds many bookkeeping keys).
TRIAL_METRICS = (
    *METRICS,
    "train_loss",
    "eval_loss",
    "train_seconds",
    "examples_per_second",
    "startup_seconds",
)


@dataclass(frozen=True)
class SweepPaths:
    """Where a sweep keeps its state; all under the local store directory by default."""

    store: Path
    study: str | None = None  # an Optuna storage URL (--optuna-storage) instead of optuna.db

    @property
    def ray(self) -> Path:
        return self.store.resolve() / "ray"

    @property
    def artifacts(self) -> Path:
        return self.store.resolve() / "artifacts"

    def weights(self, sweep: str) -> Path:
        """Where the driver keeps the trials' weights, one model directory per trial."""
        return self.ray / sweep / "weights"

    @property
    def optuna_url(self) -> str:
        return self.study or f"sqlite:///{self.store.resolve() / 'optuna.db'}"


@dataclass(frozen=True)
class SweepSummary:
    sweep: str
    sweep_run_id: str
    outcome: str  # finished, stopped (interrupted: resumable) or failed (too many failures)
    finished: int
    failed: int
    front: list[dict[str, Any]]
    hypervolume: float
    message: str = ""


def run_sweep(
    config: SweepConfig,
    raw: dict[str, Any] | None = None,
    store: Path = Path("mlflow"),
    tracking_uri: str | None = None,
    address: str | None = None,
    max_failures: int | None = None,
    progress: bool = True,
    optuna_storage: str | None = None,
) -> SweepSummary:
    """Run a whole sweep and return its Pareto front.

    Every input is checked before the first MLflow run or Optuna row is written.

    Args:
        config: the parsed space.yaml.
        raw: the space.yaml as plain data (overrides applied), kept with the sweep so that
            `resume_sweep` continues it exactly.
        store: the local store directory (MLflow SQLite, artifacts, Optuna, Ray state).
        tracking_uri: another MLflow (default: MLFLOW_TRACKING_URI, else the store).
        address: a Ray cluster to join (default: start a local one).
        max_failures: stop the sweep once this many trials failed (default: `failure_limit`).
        progress: print a line per finished trial.
        optuna_storage: a database URL for the Optuna study (default: optuna.db in the store).

    Raises:
        ConfigError, DataError, ModelError, TrackingError: bad input, before any work.
    """
    _quiet_libraries()
    paths = SweepPaths(store, optuna_storage)
    uri = resolve_uri(tracking_uri, paths.store)
    check_store(uri)
    check_study_storage(paths.optuna_url)
    prepared, ray_seconds = _prepare_and_start_ray(config, address)
    sweep = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    tracker = Tracker(uri, config.name, paths.artifacts)
    tags = {"base_model": config.model, "optuna_storage": shown_url(paths.optuna_url)}
    tracker.start_sweep(sweep, _sweep_params(config, prepared), tags)
    tracker.log_sweep_text(yaml.safe_dump(raw if raw is not None else asdict(config)), SPACE_FILE)
    _echo(progress, f"sweep {sweep}: {config.trials} trials, tracking {uri}")
    limit = max_failures or failure_limit(config.trials)
    return _drive(config, prepared, ray_seconds, tracker, sweep, paths, limit, progress, None)


def resume_sweep(
    experiment: str,
    sweep: str | None = None,
    store: Path = Path("mlflow"),
    tracking_uri: str | None = None,
    address: str | None = None,
    max_failures: int | None = None,
    progress: bool = True,
) -> SweepSummary:
    """Continue an interrupted or killed sweep: finished trials stay, unfinished ones rerun.

    The sweep's own space.yaml (stored with it) is used, so it continues exactly as it began;
    its Optuna study and MLflow parent run carry on.

    Raises:
        ConfigError: no such sweep, or no Ray state to resume it from.
    """
    _quiet_libraries()
    paths = SweepPaths(store)
    uri = resolve_uri(tracking_uri, paths.store)
    check_store(uri)
    tracker = Tracker(uri, experiment, paths.artifacts)
    run = tracker.find_sweep(sweep)
    if run is None:
        raise ConfigError([f"no sweep {sweep or ''} to resume in experiment {experiment!r}"])
    name = run.info.run_name
    if not (paths.ray / name / "tuner.pkl").is_file():
        raise ConfigError([f"sweep {name}: no Ray Tune state under {paths.ray / name}"])
    config = config_from_dict(yaml.safe_load(tracker.read_text(run.info.run_id, SPACE_FILE)))
    prepared, ray_seconds = _prepare_and_start_ray(config, address)
    tracker.resume_sweep(run.info.run_id)
    # Runs the crash left running were cut off. Tune reruns the trials its saved state knows,
    # each into its old run; one proposed after the last save is never run and stays stopped.
    tracker.settle_trials()
    finished = {r["trial"]: _metrics(r) for r in tracker.trial_rows("finished")}
    _echo(progress, f"resuming sweep {name}: {config.trials} trials, tracking {uri}")
    limit = max_failures or failure_limit(config.trials)
    return _drive(config, prepared, ray_seconds, tracker, name, paths, limit, progress, finished)


def _prepare_and_start_ray(config: SweepConfig, address: str | None) -> tuple[Prepared, float]:
    """Check the inputs, then load the model and tokenize the data while Ray starts.

    Neither needs the other and each takes seconds, so the sweep's first trial starts sooner.
    Inputs and the cluster address are checked first, so bad input fails before Ray starts;
    a Ray started here is shut down again if preparing fails.

    Returns:
        The prepared model and data, and Ray's start-up seconds (0 if it was running).
    """
    import ray

    if address:
        check_ray_address(address)
    else:
        check_resources(config)  # a local Ray waits forever for a trial it cannot place
    inputs = check_inputs(config)
    with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool:
        preparing = pool.submit(prepare, config, inputs)
        started = 0.0
        try:
            if not ray.is_initialized():
                started = time.perf_counter()
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            seconds = time.perf_counter() - started if started else 0.0
            return preparing.result(), seconds
        except BaseException:
            if started and ray.is_initialized():
                ray.shutdown()
            raise


def failure_limit(trials: int) -> int:
    """The default --max-failures: a quarter of the trials, at least 3."""
    return max(3, trials // 4)


def _drive(
    config: SweepConfig,
    prepared: Prepared,
    ray_seconds: float,
    tracker: Tracker,
    sweep: str,
    paths: SweepPaths,
    max_failures: int,
    progress: bool,
    finished: dict[str, dict[str, float]] | None,
) -> SweepSummary:
    """Run (or, given the trials finished so far, resume) the Tune experiment and close it."""
    callback = TrackingCallback(
        tracker, config, prepared.parent_layers, prepared.parent_params, progress, sweep
    )
    callback.finished_before = set(finished or ())
    startup = {"prepare_seconds": prepared.seconds}
    if ray_seconds:  # 0: Ray was running already
        startup["ray_start_seconds"] = ray_seconds
    tracker.log_sweep_metrics(startup, step=0)
    try:
        stopper = FailureLimit(callback, max_failures)
        _tune(config, prepared, callback, stopper, paths, finished)
    except BaseException:  # a second Ctrl-C, or the driver itself broke: keep what finished
        _close(tracker, config, prepared.parent_params, sweep, "stopped")
        raise
    if callback.failures.total() >= max_failures:
        ((error, count),) = callback.failures.most_common(1)
        total = callback.failures.total()
        message = f"stopped after {total} failed trials; most common error ({count}x): {error}"
        return _close(tracker, config, prepared.parent_params, sweep, "failed", message)
    if tracker.trial_rows("running") or len(tracker.trial_rows(None)) < config.trials:
        message = "interrupted; continue it with: shrink-sweep run --resume " + sweep
        return _close(tracker, config, prepared.parent_params, sweep, "stopped", message)
    return _close(tracker, config, prepared.parent_params, sweep, "finished")


def _close(
    tracker: Tracker,
    config: SweepConfig,
    parent_params: int,
    sweep: str,
    outcome: str,
    message: str = "",
) -> SweepSummary:
    """Mark trials that did not end as stopped, write the front, and end the sweep's run."""
    tracker.settle_trials()
    rows, hv = update_front(tracker, config, parent_params)
    tracker.end_sweep(outcome)
    failed = len(tracker.trial_rows("failed"))
    front = [r for r in rows if r["on_front"]]
    return SweepSummary(sweep, tracker.sweep_run_id, outcome, len(rows), failed, front, hv, message)


def _tune(
    config: SweepConfig,
    prepared: Prepared,
    callback: TrackingCallback,
    stopper: Any,
    paths: SweepPaths,
    finished: dict[str, dict[str, float]] | None,
) -> None:
    import ray
    from ray import tune

    from search.early_stopping import make_scheduler

    receiver = None  # keep_weights: none: trials send no weights at all
    if config.keep_weights != "none":  # also on a resume: the old receiver ended with its driver
        receiver = start_receiver(paths.weights(callback.sweep))
    trainable = tune.with_resources(
        tune.with_parameters(
            tune_trial,
            base=prepared.base,
            data=prepared.data,
            decoding=config.decoding,
            parent_layers=prepared.parent_layers,
            receiver=receiver,
            finished=finished,
        ),
        {"cpu": config.resources.cpus, "gpu": config.resources.gpus},
    )
    if finished is not None:
        # Finished and failed trials stay as they are; trials cut off mid-run start over.
        tuner = tune.Tuner.restore(str(paths.ray / callback.sweep), trainable)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=_searcher(config, prepared, callback.sweep, paths),
                scheduler=make_scheduler(config.scheduler, config.objectives),
                num_samples=config.trials,
                # Without a limit Tune lets a searcher have one trial pending at a time, so
                # the other slots idle while that trial's worker starts.
                max_concurrent_trials=_slots(config, ray.cluster_resources()),
                trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
                reuse_actors=True,  # the next trial skips a new worker's start-up and imports
            ),
            run_config=tune.RunConfig(
                name=callback.sweep,
                storage_path=str(paths.ray),
                callbacks=[callback],
                stop=stopper,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    tuner.fit()


def _slots(config: SweepConfig, cluster: dict[str, float]) -> int:
    """How many trials the cluster can run at once with the configured resources."""
    slots = cluster.get("CPU", 1) // config.resources.cpus
    if config.resources.gpus:
        slots = min(slots, cluster.get("GPU", 0) // config.resources.gpus)
    if config.max_concurrent:
        slots = min(slots, config.max_concurrent)
    return max(1, int(slots))


def _quiet_libraries() -> None:
    """Our own progress lines replace Ray's tables and the libraries' progress bars."""
    import os

    import datasets
    import optuna
    import transformers

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _searcher(config: SweepConfig, prepared: Prepared, sweep: str, paths: SweepPaths) -> Any:
    from search.early_stopping import StoppingOptunaSearch

    return StoppingOptunaSearch(
        space=functools.partial(suggest, config=config, parent_layers=prepared.parent_layers),
        metric=[o.metric for o in config.objectives],
        mode=[o.mode for o in config.objectives],
        sampler=make_sampler(config, prepared.parent_layers),
        study_name=sweep,
        storage=_optuna_storage(paths.optuna_url),
        points_to_evaluate=[dict(p) for p in config.first] or None,
    )


def _optuna_storage(url: str) -> Any:
    import optuna

    with store_lock(url):
        return optuna.storages.RDBStorage(url)


def make_sampler(config: SweepConfig, parent_layers: tuple[int, int]) -> Any:
    """The Optuna sampler named in `space.yaml`, seeded."""
    import optuna

    name, seed = config.sampler.name, config.sampler.seed
    if name == "grid":
        return optuna.samplers.GridSampler(grid(config, parent_layers), seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.sampler.startup_trials)


# --- the driver's MLflow writer ------------------------------------------------------------


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
    """Mirrors Ray Tune's trial events into MLflow and keeps the Pareto artifacts current."""

    def __init__(
        self,
        tracker: Tracker,
        config: SweepConfig,
        parent_layers: tuple[int, int],
        parent_params: int,
        progress: bool,
        sweep: str,
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
        self.finished_before: set[str] = set()  # trials of a resumed sweep that had finished
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
        self.runs[trial.trial_id] = self.tracker.start_trial(trial.trial_id, params, {})
        self.started[trial.trial_id] = time.monotonic()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if trial.trial_id in self.finished_before:
            return  # replayed from its own record: nothing new
        run_id = self._run(trial)
        metrics = {k: result[k] for k in TRIAL_METRICS if k in result}
        self.tracker.log_trial_metrics(run_id, metrics, step=int(result.get("step", 0)))
        where = {k: str(result[k]) for k in ("node", "node_ip") if result.get(k)}
        if where:  # node: the Ray node id the trial reports; one machine's nodes share an IP
            self.tracker.set_trial_tags(run_id, where)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.finished_before:
            return
        run_id = self._run(trial)
        result = trial.last_result or {}
        if not result.get("final"):  # stopped early by the scheduler, or by the sweep's end
            self.tracker.client.set_tag(run_id, "stopped_at_step", int(result.get("step", 0)))
            self.tracker.end_trial(run_id, "stopped")
            self._after(trial, "stopped", f"early, at step {result.get('step', 0)}")
            return
        if result.get("weights"):  # where the driver's receiver wrote them
            self.tracker.client.set_tag(run_id, "checkpoint", result["weights"])
        self.tracker.end_trial(run_id, "finished")
        self._after(trial, "finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _error_text(trial)
        self.failures[_error_summary(error)] += 1
        self.tracker.end_trial(self._run(trial), "failed", error=error)
        self._after(trial, "failed", _error_summary(error))

    def _run(self, trial: Any) -> str:
        if trial.trial_id not in self.runs:  # a trial that started before a resume
            self.runs[trial.trial_id] = self.tracker.start_trial(trial.trial_id, trial.config, {})
        return self.runs[trial.trial_id]

    def _after(self, trial: Any, outcome: str, detail: str = "") -> None:
        rows, hv = update_front(self.tracker, self.config, self.parent_params)
        done = sum(r["outcome"] != "running" for r in self.tracker.trial_rows(None))
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
        _echo(self.progress, line)


class FailureLimit(_tune_base("Stopper")):
    """Stops the whole sweep once `limit` trials have failed (--max-failures)."""

    def __init__(self, callback: TrackingCallback, limit: int) -> None:
        self.callback = callback
        self.limit = limit

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.callback.failures.total() >= self.limit


def update_front(
    tracker: Tracker, config: SweepConfig, parent_params: int
) -> tuple[list[dict[str, Any]], float]:
    """Recompute the front over every finished trial and log it to the sweep's parent run.

    Returns:
        All finished trial rows (each with `on_front`) and the front's hypervolume.
    """
    rows = [r for r in tracker.trial_rows("finished") if _has_objectives(r, config)]
    if not rows:
        return [], 0.0
    names = [o.metric for o in config.objectives]
    modes = [o.mode for o in config.objectives]
    values = [[float(r[m]) for m in names] for r in rows]
    mask = pareto_front(values, modes)
    for row, on_front in zip(rows, mask, strict=True):
        row["on_front"] = bool(on_front)
    reference = reference_point(config, parent_params)
    hv = hypervolume([v for v, m in zip(values, mask, strict=True) if m], modes, reference)
    tracker.log_sweep_metrics({"hypervolume": hv, "front_size": int(sum(mask))}, step=len(rows))
    _log_front_artifacts(tracker, config, rows)
    if config.keep_weights == "pareto":
        _drop_dominated_weights(rows)
    return rows, hv


def reference_point(config: SweepConfig, parent_params: int) -> list[float]:
    """The hypervolume's reference: as configured, else 0 for maximized metrics and the base
    model's size (parameters, or twice the observed scale for other minimized metrics)."""
    point = []
    for objective in config.objectives:
        if objective.metric in config.reference_point:
            point.append(config.reference_point[objective.metric])
        elif objective.mode == "max":
            point.append(0.0)
        else:
            point.append(float(parent_params) if objective.metric.startswith("params") else 1e12)
    return point


def _log_front_artifacts(tracker: Tracker, config: SweepConfig, rows: list[dict[str, Any]]) -> None:
    x, y = config.objectives[-1], config.objectives[0]
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "pareto.csv"
        write_front_csv(rows, table)
        fig = pareto_figure(
            [_plot_row(r) for r in rows],
            x.metric,
            y.metric,
            x.mode,
            y.mode,
            f"{tracker.sweep_run_id}",
        )
        html = write_pareto_html(fig, Path(tmp) / "pareto.html")
        tracker.log_sweep_artifact(table)
        tracker.log_sweep_artifact(html)


def write_front_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Every finished trial, front first, with the columns a user compares."""
    columns = ["trial", "on_front", *TRIAL_METRICS, "strategy", "encoder_layers", "decoder_layers"]
    extra = sorted({k for r in rows for k in r} - set(columns) - {"run_id", "outcome"})
    ordered = sorted(rows, key=lambda r: (not r.get("on_front"), r.get("trial") or ""))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, [*columns, *extra], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(ordered)
    return path


def _plot_row(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("trial", "strategy", "encoder_layers", "decoder_layers", "learning_rate", "max_steps")
    plotted = {k: row[k] for k in keep if k in row}
    plotted.update({m: row[m] for m in TRIAL_METRICS if m in row})
    return plotted


def _drop_dominated_weights(rows: list[dict[str, Any]]) -> None:
    """A dominated trial stays dominated, so its weights can go (keep_weights: pareto)."""
    for row in rows:
        checkpoint = row.get("checkpoint")
        if not row["on_front"] and checkpoint and Path(checkpoint).is_dir():
            shutil.rmtree(checkpoint, ignore_errors=True)


def _sweep_params(config: SweepConfig, prepared: Prepared) -> dict[str, Any]:
    flat = _flatten(asdict(config))
    flat["parent_params"] = prepared.parent_params
    flat["parent_encoder_layers"], flat["parent_decoder_layers"] = prepared.parent_layers
    return flat


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def _metrics(row: dict[str, Any]) -> dict[str, float]:
    return {k: row[k] for k in TRIAL_METRICS if k in row}


def _has_objectives(row: dict[str, Any], config: SweepConfig) -> bool:
    return all(o.metric in row for o in config.objectives)


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


def _echo(enabled: bool, line: str) -> None:
    if enabled:
        print(line, flush=True)
