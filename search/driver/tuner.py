"""Ray Tune and Optuna wired together for one sweep.

Ray Tune schedules the trials (concurrency follows `resources`; a cluster runs them on its
nodes) and Optuna proposes them through Ray's `OptunaSearch`, the objectives as a list, its
study in the store's optuna.db or `--optuna-storage`. The trial itself is
`search.driver.trainable.tune_trial`; the early-stopping scheduler is
`search.strategy.early_stopping`.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.driver.preflight import Prepared
from search.driver.progress import ProgressBoard, ProgressView
from search.driver.trainable import tune_trial
from search.driver.weights import WeightsReceiver
from search.driver.workers import trial_slots
from search.record.paths import SweepPaths
from search.record.store import store_lock
from search.space.config import SweepConfig
from search.space.suggest import grid, suggest

if TYPE_CHECKING:
    from search.driver.callbacks import FailureLimit, TrackingCallback


def run_trials(
    config: SweepConfig,
    prepared: Prepared,
    paths: SweepPaths,
    callback: TrackingCallback,
    stopper: FailureLimit,
    finished: dict[str, dict[str, float]] | None,
    experiment: str,
    earlier: int = 0,
) -> None:
    """Run the sweep's Tune `experiment` until its trials are done or it stops.

    Args:
        finished: None for a new experiment; for a resumed one, the metrics of the trials
            MLflow records as finished. The experiment is then restored from its saved state:
            finished and failed trials stay as they are, trials cut off mid-run start over.
        earlier: for a new experiment that extends a finished sweep, the trials the sweep ran
            before: this one runs the rest, without the `first:` points (tried already).
    """
    import ray
    from ray import tune

    board = driver_actor(ProgressBoard)
    trainable = _trainable(config, prepared, paths.weights(callback.sweep), finished, board)
    if finished is not None:
        tuner = tune.Tuner.restore(str(paths.ray / experiment), trainable)
    else:
        tuner = _new_tuner(
            config, prepared, paths, trainable, callback, stopper, experiment, earlier
        )
    callback.slots = trial_slots(config, ray.cluster_resources())

    def read_steps() -> dict:
        return ray.get(board.snapshot.remote(), timeout=10)

    view = nullcontext()
    if callback.progress:
        view = ProgressView(read_steps, callback.status)
        callback.before_end = view.trial_ending
    with view:
        tuner.fit()


def _trainable(
    config: SweepConfig,
    prepared: Prepared,
    weights: Path,
    finished: dict[str, dict[str, float]] | None,
    board: Any,
) -> Any:
    """`tune_trial` with the prepared model and data, and the resources one trial takes."""
    from ray import tune

    receiver = None  # keep_weights: none: trials send no weights at all
    if config.keep_weights != "none":  # also on a resume: the old receiver ended with its driver
        receiver = driver_actor(WeightsReceiver, str(weights))
    return tune.with_resources(
        tune.with_parameters(
            tune_trial,
            base=prepared.base,
            data=prepared.data,
            decoding=config.decoding,
            parent_layers=prepared.parent_layers,
            scheduler=config.scheduler,
            memory_limit=config.resources.memory_limit,
            receiver=receiver,
            finished=finished,
            board=board,
        ),
        {"cpu": config.resources.cpus, "gpu": config.resources.gpus},
    )


def _new_tuner(
    config: SweepConfig,
    prepared: Prepared,
    paths: SweepPaths,
    trainable: Any,
    callback: TrackingCallback,
    stopper: FailureLimit,
    experiment: str,
    earlier: int,
) -> Any:
    import ray
    from ray import tune

    from search.strategy.early_stopping import make_scheduler
    from search.strategy.halving import never_stopped
    from search.strategy.screen import pick_points

    picks = pick_points(config, prepared.screen, prepared.parent_layers)
    spared = never_stopped(config, picks)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=_searcher(config, prepared, callback, paths, first=not earlier),
            scheduler=make_scheduler(config.scheduler, config.objectives, spared),
            num_samples=config.trials - earlier,
            # Without a limit Tune lets a searcher have one trial pending at a time, so the
            # other slots idle while that trial's worker starts.
            max_concurrent_trials=trial_slots(config, ray.cluster_resources()),
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
            reuse_actors=True,  # the next trial skips a new worker's start-up and imports
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=str(paths.ray),
            callbacks=[callback],
            stop=stopper,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def driver_actor(cls: type, *args: Any) -> Any:
    """Start `cls` as a Ray actor on this process's own node (the driver's): the trials'
    weights and steps come back to it. It takes no CPU, so it never holds a trial's slot, and
    it ends with the driver.

    Returns:
        The actor's handle, which trials receive through `tune.with_parameters`.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    here = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(cls).remote(*args)


def _searcher(
    config: SweepConfig,
    prepared: Prepared,
    callback: TrackingCallback,
    paths: SweepPaths,
    first: bool = True,
) -> Any:
    """Ray's Optuna searcher over the sweep's study (`callback.sweep`; an existing one is
    continued), trying the `first:` points and the screen's pick first unless told they were
    tried."""
    from search.front.rows import reference_point
    from search.strategy.screen import points_to_try
    from search.strategy.searcher import SweepSearch

    return SweepSearch(
        space=functools.partial(suggest, config=config, parent_layers=prepared.parent_layers),
        metric=[o.metric for o in config.objectives],
        mode=[o.mode for o in config.objectives],
        sampler=make_sampler(config, prepared.parent_layers),
        study_name=callback.sweep,
        storage=_optuna_storage(paths.optuna_url),
        points_to_evaluate=(
            points_to_try(config, prepared.screen, prepared.parent_layers) if first else None
        ),
        constraints=config.constraints,
        objectives=config.objectives,
        reference=reference_point(config, prepared.parent_params),
        prepared=prepared,
        on_infeasible=callback.record_infeasible,
    )


def _optuna_storage(url: str) -> Any:
    import optuna

    with store_lock(url):
        return optuna.storages.RDBStorage(url)


def make_sampler(config: SweepConfig, parent_layers: tuple[int, int]) -> Any:
    """The Optuna sampler named in `space.yaml`, seeded; the samplers that take constraints
    read each trial's violations from the trial (`search.space.constraints.tell_violations`)."""
    import optuna

    name, seed = config.sampler.name, config.sampler.seed
    if name == "grid":
        return optuna.samplers.GridSampler(grid(config, parent_layers), seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = config.sampler.startup_trials
    if name == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=startup, warn_independent_sampling=False
        )
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=startup,
        constant_liar=config.sampler.constant_liar,
    )
