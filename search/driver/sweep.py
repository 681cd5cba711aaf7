"""The sweep driver: check everything, prepare data once, run the trials, close the sweep.

A sweep begins (`run_sweep`) or continues (`resume_sweep`), then `_drive` runs its trials
through Ray Tune and Optuna (`search.driver.tuner`) with a Tune callback in this process as the
only writer to MLflow (`search.driver.callbacks`), and `_close` writes the final front
(`search.record.front_log`).
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from search.console import echo, keep_log, quiet_libraries, to_root
from search.driver.callbacks import FailureLimit, TrackingCallback
from search.driver.cluster import check_ray_address, cluster_refused
from search.driver.plan import describe as describe_plan
from search.driver.plan import estimate_sweep
from search.driver.preflight import (
    Prepared,
    check_inputs,
    check_resources,
    prepare,
    with_targets,
)
from search.driver.tuner import run_trials
from search.driver.workers import BaseWorkers
from search.front.rows import trial_metrics
from search.record.front_log import teacher_metrics, update_front
from search.record.paths import SweepPaths
from search.record.store import (
    OUTCOME_TAG,
    PSEUDO_LABELS_TAG,
    SCREEN_PICKS_TAG,
    SCREEN_WHERE_TAG,
    TARGETS_TAG,
    TRIALS_TAG,
    TUNE_EXPERIMENT_TAG,
    check_store,
    check_study_storage,
    resolve_uri,
    run_url,
    serve_command,
    shown_url,
)
from search.record.tracker import Tracker, open_sweep
from search.space.config import ConfigError, SweepConfig, config_from_dict
from search.strategy.screen import (
    SCREEN_FILE,
    describe_student,
    screen_csv,
    screen_picks,
    screen_students,
)

SPACE_FILE = "space.yaml"  # the sweep's own configuration, kept on its parent run


@dataclass(frozen=True)
class SweepRun:
    """One sweep as the driver runs it: what it runs, where it writes, how it reports."""

    name: str  # the sweep: its MLflow parent run, Optuna study and Ray experiment
    config: SweepConfig
    prepared: Prepared
    tracker: Tracker
    paths: SweepPaths
    max_failures: int
    progress: bool  # print a line per finished trial
    ray_seconds: float  # Ray's start-up time, 0 if it was running already
    # Metrics of the trials MLflow records as finished, when a sweep is resumed; else None.
    finished: dict[str, dict[str, float]] | None = None
    # The Ray Tune experiment that runs the trials (default: the sweep's name), and, for a new
    # one that extends a finished sweep, the trials the sweep ran before it (not run again).
    experiment: str = ""
    earlier: int = 0

    @property
    def tune_experiment(self) -> str:
        return self.experiment or self.name


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
    plot_url: str = ""  # the sweep's Pareto plot in the MLflow UI
    ui_command: str = ""  # what serves that UI; empty for a tracking server


def run_sweep(
    config: SweepConfig,
    raw: dict[str, Any] | None = None,
    store: Path = Path("mlflow"),
    tracking_uri: str | None = None,
    address: str | None = None,
    max_failures: int | None = None,
    progress: bool = True,
    optuna_storage: str | None = None,
    verbose: bool = False,
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
        verbose: show the libraries' messages (Ray, MLflow, warnings) on stderr too; they
            always go to the sweep's log file in the store.

    Raises:
        ConfigError, DataError, ModelError, TrackingError: bad input, before any work.
    """
    quiet_libraries(verbose)
    paths = SweepPaths(store, optuna_storage)
    uri = resolve_uri(tracking_uri, paths.store)
    check_store(uri)
    check_study_storage(paths.optuna_url)
    prepared, ray_seconds = _prepare_and_start_ray(config, address, paths, progress, new=True)
    sweep = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    tracker = Tracker(uri, config.name, paths.artifacts)
    tags = {"base_model": config.model, "optuna_storage": shown_url(paths.optuna_url)}
    if prepared.pseudo_labels:
        tags[PSEUDO_LABELS_TAG] = prepared.pseudo_labels
    raw = raw if raw is not None else asdict(config)
    if prepared.recipe is not None:  # kept chosen: a resumed or extended sweep does not choose
        tags[TARGETS_TAG] = prepared.recipe.reason()
        config = with_targets(config, prepared.recipe.targets)
        raw = {**raw, "train": {**raw.get("train", {}), "targets": prepared.recipe.targets}}
    tracker.start_sweep(sweep, _sweep_params(config, prepared), tags)
    tracker.log_sweep_text(yaml.safe_dump(raw), SPACE_FILE)
    if prepared.teacher is not None:
        tracker.log_sweep_metrics(teacher_metrics(prepared.teacher), step=0)
    echo(progress, f"sweep {sweep}: {config.trials} trials, tracking {uri}")
    echo(progress, f"library messages and warnings: {keep_log(paths.log(sweep))}")
    if prepared.screen:
        _record_screen(config, prepared, tracker, progress)
    if prepared.plan is not None:
        for line in describe_plan(prepared.plan, config):
            echo(progress, line)
    limit = max_failures or failure_limit(config.trials)
    return _drive(SweepRun(sweep, config, prepared, tracker, paths, limit, progress, ray_seconds))


def resume_sweep(
    experiment: str,
    sweep: str | None = None,
    store: Path = Path("mlflow"),
    tracking_uri: str | None = None,
    address: str | None = None,
    max_failures: int | None = None,
    progress: bool = True,
    verbose: bool = False,
    trials: int | None = None,
) -> SweepSummary:
    """Continue an interrupted or killed sweep: finished trials stay, unfinished ones rerun.
    Given `trials`, extend a finished sweep instead: run more trials until it has that many.

    The sweep's own space.yaml (stored with it) is used, so it continues exactly as it began;
    its Optuna study and MLflow parent run carry on. An extension's sampler continues the
    same study, so it proposes from everything the sweep measured.

    Raises:
        SweepNotFound: no such sweep.
        ConfigError: no Ray state to resume it from; `trials` given for a sweep that did not
            finish, or not more than it has.
    """
    quiet_libraries(verbose)
    paths = SweepPaths(store)
    uri = resolve_uri(tracking_uri, paths.store)
    tracker, run = open_sweep(uri, experiment, paths.artifacts, sweep)
    name = run.info.run_name
    tune_experiment = run.data.tags.get(TUNE_EXPERIMENT_TAG, name)
    if not (paths.ray / tune_experiment / "tuner.pkl").is_file():
        raise ConfigError([f"sweep {name}: no Ray Tune state under {paths.ray / tune_experiment}"])
    raw = yaml.safe_load(tracker.read_text(run.info.run_id, SPACE_FILE))
    config = config_from_dict(raw)
    if trials is not None:
        _check_extension(name, run.data.tags.get(OUTCOME_TAG), config.trials, trials)
        return _extend(config, raw, trials, run, tracker, paths, address, max_failures, progress)
    prepared, ray_seconds = _prepare_and_start_ray(config, address, paths, progress)
    tracker.resume_sweep(run.info.run_id)
    # Runs the crash left running were cut off. Tune reruns the trials its saved state knows,
    # each into its old run; one proposed after the last save is never run and stays stopped.
    tracker.trials.settle()
    finished = {r["trial"]: trial_metrics(r) for r in tracker.trials.rows("finished")}
    echo(progress, f"resuming sweep {name}: {config.trials} trials, tracking {uri}")
    echo(progress, f"library messages and warnings: {keep_log(paths.log(name))}")
    limit = max_failures or failure_limit(config.trials)
    resumed = SweepRun(name, config, prepared, tracker, paths, limit, progress, ray_seconds)
    return _drive(dataclasses.replace(resumed, finished=finished, experiment=tune_experiment))


def _check_extension(sweep: str, outcome: str | None, has: int, wanted: int) -> None:
    """Raises ConfigError unless a sweep of `has` trials that ended `outcome` can be extended
    to `wanted` trials."""
    if outcome != "finished":
        raise ConfigError(
            [
                f"sweep {sweep} did not finish ({outcome}): continue it first with "
                f"shrink-sweep run --resume {sweep}, then give --trials to extend it"
            ],
            source="the command line",
        )
    if wanted <= has:
        raise ConfigError(
            [f"sweep {sweep} has {has} trials: --trials {wanted} adds none (give more to extend)"],
            source="the command line",
        )


def _extend(
    config: SweepConfig,
    raw: dict[str, Any],
    trials: int,
    run: Any,
    tracker: Tracker,
    paths: SweepPaths,
    address: str | None,
    max_failures: int | None,
    progress: bool,
) -> SweepSummary:
    """Run a finished sweep's next trials, `trials` in all, as a new Tune experiment of the
    same sweep (its MLflow run, Optuna study and weights); its space.yaml is kept with the new
    count, so that an interrupted extension resumes like any sweep."""
    name, earlier = run.info.run_name, config.trials
    more = dataclasses.replace(config, trials=trials)
    prepared, ray_seconds = _prepare_and_start_ray(more, address, paths, progress)
    tune_experiment = f"{name}-to-{trials}"
    tracker.resume_sweep(run.info.run_id)
    tracker.log_sweep_text(yaml.safe_dump({**raw, "trials": trials}), SPACE_FILE)
    tracker.set_sweep_tags({TUNE_EXPERIMENT_TAG: tune_experiment, TRIALS_TAG: str(trials)})
    echo(progress, f"extending sweep {name}: {trials - earlier} more trials, {trials} in all")
    echo(progress, f"library messages and warnings: {keep_log(paths.log(name))}")
    limit = max_failures or failure_limit(trials)
    extended = SweepRun(name, more, prepared, tracker, paths, limit, progress, ray_seconds)
    return _drive(dataclasses.replace(extended, experiment=tune_experiment, earlier=earlier))


def _prepare_and_start_ray(
    config: SweepConfig,
    address: str | None,
    paths: SweepPaths,
    progress: bool,
    new: bool = False,
) -> tuple[Prepared, float]:
    """Check the inputs, then load the model and tokenize the data (and, for a `new` sweep,
    score every student untrained if `sampler.screen` says so, and estimate the sweep) while
    Ray starts.

    Neither needs the other and each takes seconds, so the sweep's first trial starts sooner.
    Inputs and the cluster address are checked first, so bad input fails before Ray starts;
    a Ray started here is shut down again if preparing fails.

    Returns:
        The prepared model and data, and Ray's start-up seconds (0 if it was running).
    """
    import ray

    to_root("ray")  # its token notice and Tune's messages go to the log file
    if address:
        check_ray_address(address)
    else:
        check_resources(config)  # a local Ray waits forever for a trial it cannot place
    echo(progress, f"checking the model ({config.model}) and the data")
    inputs = check_inputs(config)
    pairs = {role: len(split) for role, split in inputs[1].items()}
    screen = new and config.sampler.screen > 0
    echo(
        progress,
        f"loading the model and tokenizing {pairs['train']:,} training and {pairs['eval']:,} "
        f"evaluation pairs{', then scoring every student untrained' if screen else ''}; "
        f"starting Ray{' at ' + address if address else ''}",
    )
    ray_up = threading.Event()
    workers = BaseWorkers(config, wait_for_ray=lambda: _wait_for_ray(ray_up))
    with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool:
        preparing = pool.submit(_prepare, config, inputs, paths, progress, new, workers)
        started = 0.0
        try:
            try:
                if not ray.is_initialized():
                    started = time.perf_counter()
                    ray.init(
                        address=address,
                        include_dashboard=False,
                        log_to_driver=False,
                        configure_logging=False,
                    )
            except ConnectionError as err:
                if not address:
                    raise
                raise cluster_refused(address, err) from None
            finally:
                ray_up.set()  # the preparation waits for Ray only if it needs workers
            seconds = time.perf_counter() - started if started else 0.0
            prepared = preparing.result()
            ready = f"ready: model and data in {prepared.seconds:.0f}s, Ray in {seconds:.0f}s"
            echo(progress, ready)
            return prepared, seconds
        except BaseException:
            if started and ray.is_initialized():
                ray.shutdown()
            raise


def _wait_for_ray(up: threading.Event) -> None:
    """Wait until the main thread has started Ray (or failed to)."""
    import ray

    up.wait()
    if not ray.is_initialized():
        raise RuntimeError("Ray did not start")


def _prepare(
    config: SweepConfig,
    inputs: Any,
    paths: SweepPaths,
    progress: bool,
    new: bool,
    workers: BaseWorkers,
) -> Prepared:
    """Load and tokenize; for a new sweep, estimate what it will cost (`search.driver.plan`,
    which refuses a space that cannot fit before anything is written) and score the teacher
    (choosing the targets for `train.targets: auto`); label; then, for a new sweep, screen (if
    `sampler.screen` says so). On Ray's workers where there is work for them,
    which end before the first trial."""
    plans = []

    def estimate(loaded: Prepared) -> None:
        plans.append(estimate_sweep(config, loaded, workers, 0.0))

    try:
        prepared = prepare(
            config, inputs, paths.pseudo_labels, progress, workers,
            before_work=estimate if new else None, score_teacher=new,
        )  # fmt: skip
        if not new:
            return prepared
        prepared = dataclasses.replace(prepared, plan=plans[0])
        if prepared.recipe is not None:
            config = with_targets(config, prepared.recipe.targets)
        if config.sampler.screen:
            score = functools.partial(workers.zero_shot, prepared.base)
            screened, seconds = screen_students(config, prepared, score)
            prepared = dataclasses.replace(
                prepared,
                screen=tuple(screened),
                screen_seconds=seconds,
                screen_where=workers.describe(),
            )
        return prepared
    finally:
        workers.close()


def _record_screen(
    config: SweepConfig, prepared: Prepared, tracker: Tracker, progress: bool
) -> None:
    """Keep the screen's scores with the sweep (screen.csv) and say what it picked."""
    tracker.log_sweep_text(screen_csv(prepared.screen), SCREEN_FILE)
    tracker.log_sweep_metrics({"screen_seconds": prepared.screen_seconds}, step=0)
    picks = screen_picks(prepared.screen, config, prepared.parent_layers)
    names = [describe_student(s.values) for s in picks]
    tags = {SCREEN_WHERE_TAG: prepared.screen_where} if prepared.screen_where else {}
    if names:
        tags[SCREEN_PICKS_TAG] = ", ".join(names)
    if tags:
        tracker.set_sweep_tags(tags)
    said = (
        f"screened {len(prepared.screen)} students untrained {prepared.screen_where} in "
        f"{prepared.screen_seconds:.0f}s"
    )
    echo(progress, f"{said}; trained first: {', '.join(names) or 'the first: points'}")


def failure_limit(trials: int) -> int:
    """The default --max-failures: a quarter of the trials, at least 3."""
    return max(3, trials // 4)


def _drive(run: SweepRun) -> SweepSummary:
    """Run (or, given the trials finished so far, resume) the Tune experiment and close it."""
    prepared = run.prepared
    earlier = Counter(r["outcome"] for r in run.tracker.trials.rows(None)) if run.earlier else None
    callback = TrackingCallback(
        run.tracker,
        run.config,
        prepared.parent_layers,
        prepared.parent_params,
        run.progress,
        run.name,
        finished_before=run.finished or (),
        earlier=earlier,
    )
    if run.finished or run.earlier:  # the progress view starts from the front so far
        callback.refresh_front()
    startup = {"prepare_seconds": prepared.seconds}
    if run.ray_seconds:  # 0: Ray was running already
        startup["ray_start_seconds"] = run.ray_seconds
    run.tracker.log_sweep_metrics(startup, step=0)
    try:
        stopper = FailureLimit(callback, run.max_failures)
        run_trials(
            run.config,
            prepared,
            run.paths,
            callback,
            stopper,
            run.finished,
            run.tune_experiment,
            run.earlier,
        )
    except BaseException:  # a second Ctrl-C, or the driver itself broke: keep what finished
        _close(run, "stopped")
        raise
    if callback.failures.total() >= run.max_failures:
        return _close(run, "failed", callback.failure_message())
    if run.tracker.trials.rows("running") or len(run.tracker.trials.rows(None)) < run.config.trials:
        message = "interrupted; continue it with: shrink-sweep run --resume " + run.name
        return _close(run, "stopped", message)
    return _close(run, "finished")


def _close(run: SweepRun, outcome: str, message: str = "") -> SweepSummary:
    """Mark trials that did not end as stopped, write the front, and end the sweep's run."""
    tracker = run.tracker
    tracker.trials.settle()
    rows, hv = update_front(tracker, run.config, run.prepared.parent_params)
    tracker.end_sweep(outcome)
    failed = len(tracker.trials.rows("failed"))
    front = [r for r in rows if r["on_front"]]
    plot = run_url(tracker.uri, tracker.experiment_id, tracker.sweep_run_id, "pareto.html")
    return SweepSummary(
        run.name,
        tracker.sweep_run_id,
        outcome,
        len(rows),
        failed,
        front,
        hv,
        message,
        plot,
        serve_command(tracker.uri, run.paths.store),
    )


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
