"""The sweep driver: check everything, prepare data once, let Ray Tune run Optuna's proposals.

Ray Tune schedules the trials (concurrency follows `resources`; `--address` joins a cluster),
Optuna proposes them through Ray's `OptunaSearch` with the objectives as a list, and a Tune
callback in this process is the only writer to MLflow.
"""

from __future__ import annotations

import csv
import functools
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from search.config import SweepConfig
from search.pareto import hypervolume, pareto_front
from search.plot import pareto_figure, write_pareto_html
from search.preflight import Prepared, prepare
from search.space import InfeasibleError, grid, plan, suggest
from search.tracking import Tracker, check_store, resolve_uri
from trainables.trial import tune_trial

# Metrics a trial reports that are logged to MLflow (Ray adds many bookkeeping keys).
TRIAL_METRICS = (
    "rouge1",
    "rouge2",
    "rougeL",
    "rougeLsum",
    "params",
    "params_non_embedding",
    "size_mb",
    "latency_ms",
    "train_loss",
    "eval_loss",
    "train_seconds",
    "examples_per_second",
)


@dataclass(frozen=True)
class SweepPaths:
    """Where a sweep keeps its state; all under the local store directory by default."""

    store: Path

    @property
    def ray(self) -> Path:
        return self.store.resolve() / "ray"

    @property
    def artifacts(self) -> Path:
        return self.store.resolve() / "artifacts"

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.store.resolve() / 'optuna.db'}"


@dataclass(frozen=True)
class SweepSummary:
    sweep: str
    sweep_run_id: str
    finished: int
    failed: int
    front: list[dict[str, Any]]
    hypervolume: float


def run_sweep(
    config: SweepConfig,
    store: Path = Path("mlflow"),
    tracking_uri: str | None = None,
    address: str | None = None,
    progress: bool = True,
) -> SweepSummary:
    """Run a whole sweep and return its Pareto front.

    Every input is checked before the first MLflow run or Optuna row is written.

    Raises:
        ConfigError, DataError, ModelError, TrackingError: bad input, before any work.
    """
    _quiet_libraries()
    paths = SweepPaths(store)
    uri = resolve_uri(tracking_uri, paths.store)
    check_store(uri)
    prepared = prepare(config)
    sweep = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracker = Tracker(uri, config.name, paths.artifacts)
    tracker.start_sweep(sweep, _sweep_params(config, prepared), {"base_model": config.model})
    _echo(progress, f"sweep {sweep}: {config.trials} trials, tracking {uri}")
    try:
        _tune(config, prepared, tracker, sweep, paths, address, progress)
    except BaseException:
        update_front(tracker, config, prepared.parent_params, paths)
        tracker.end_sweep("failed")
        raise
    summary = finish(tracker, config, prepared.parent_params, paths, sweep)
    tracker.end_sweep("finished")
    return summary


def _tune(
    config: SweepConfig,
    prepared: Prepared,
    tracker: Tracker,
    sweep: str,
    paths: SweepPaths,
    address: str | None,
    progress: bool,
) -> None:
    import ray
    from ray import tune

    if not ray.is_initialized():
        ray.init(
            address=address, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    trainable = tune.with_resources(
        tune.with_parameters(
            tune_trial,
            base=prepared.base,
            data=prepared.data,
            decoding=config.decoding,
            parent_layers=prepared.parent_layers,
        ),
        {"cpu": config.resources.cpus, "gpu": config.resources.gpus},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=_searcher(config, prepared, sweep, paths),
            num_samples=config.trials,
            # Without a limit Tune lets a searcher have one trial pending at a time, so the
            # other slots idle while that trial's worker starts; with one, every slot fills.
            max_concurrent_trials=_slots(config, ray.cluster_resources()),
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
            reuse_actors=True,  # the next trial skips a new worker's start-up and imports
        ),
        run_config=tune.RunConfig(
            name=sweep,
            storage_path=str(paths.ray),
            callbacks=[TrackingCallback(tracker, config, prepared, paths, progress)],
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
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(
        space=functools.partial(suggest, config=config, parent_layers=prepared.parent_layers),
        metric=[o.metric for o in config.objectives],
        mode=[o.mode for o in config.objectives],
        sampler=make_sampler(config, prepared.parent_layers),
        study_name=sweep,
        storage=optuna.storages.RDBStorage(paths.optuna_url),
        points_to_evaluate=[dict(p) for p in config.first] or None,
    )


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
    return optuna.samplers.TPESampler(seed=seed)


# --- the driver's MLflow writer ------------------------------------------------------------


def _tune_callback_base() -> type:
    from ray.tune import Callback

    return Callback


class TrackingCallback(_tune_callback_base()):
    """Mirrors Ray Tune's trial events into MLflow and keeps the Pareto artifacts current."""

    def __init__(
        self,
        tracker: Tracker,
        config: SweepConfig,
        prepared: Prepared,
        paths: SweepPaths,
        progress: bool,
    ) -> None:
        self.tracker = tracker
        self.config = config
        self.prepared = prepared
        self.paths = paths
        self.progress = progress
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id
        self.started: dict[str, float] = {}
        self.done = 0

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = dict(trial.config)
        try:
            planned = plan(params, self.prepared.parent_layers)
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
        run_id = self.runs[trial.trial_id]
        metrics = {k: result[k] for k in TRIAL_METRICS if k in result}
        self.tracker.log_trial_metrics(run_id, metrics, step=int(result.get("step", 0)))
        if result.get("node_ip"):
            self.tracker.client.set_tag(run_id, "node_ip", result["node_ip"])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.runs[trial.trial_id]
        if trial.checkpoint is not None:
            self.tracker.client.set_tag(run_id, "checkpoint", trial.checkpoint.path)
        self.tracker.end_trial(run_id, "finished")
        self._after(trial, "finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.end_trial(self.runs[trial.trial_id], "failed", error=_error_text(trial))
        self._after(trial, "failed")

    def _after(self, trial: Any, outcome: str) -> None:
        self.done += 1
        rows, hv = update_front(self.tracker, self.config, self.prepared.parent_params, self.paths)
        seconds = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
        result = trial.last_result or {}
        line = (
            f"[{self.done}/{self.config.trials}] trial {trial.trial_id} {outcome} in {seconds:.0f}s"
        )
        if outcome == "finished":
            line += " | " + ", ".join(
                f"{o.metric} {_short(result.get(o.metric))}" for o in self.config.objectives
            )
        line += f" | front {sum(r['on_front'] for r in rows)} of {len(rows)}, hypervolume {hv:.4g}"
        _echo(self.progress, line)


def update_front(
    tracker: Tracker, config: SweepConfig, parent_params: int, paths: SweepPaths
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
    """A dominated trial stays dominated, so its checkpoint can go (keep_weights: pareto)."""
    for row in rows:
        checkpoint = row.get("checkpoint")
        if not row["on_front"] and checkpoint and Path(checkpoint).is_dir():
            shutil.rmtree(checkpoint, ignore_errors=True)


def finish(
    tracker: Tracker, config: SweepConfig, parent_params: int, paths: SweepPaths, sweep: str
) -> SweepSummary:
    rows, hv = update_front(tracker, config, parent_params, paths)
    failed = len(tracker.trial_rows("failed"))
    front = [r for r in rows if r["on_front"]]
    return SweepSummary(sweep, tracker.sweep_run_id, len(rows), failed, front, hv)


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


def _has_objectives(row: dict[str, Any], config: SweepConfig) -> bool:
    return all(o.metric in row for o in config.objectives)


def _error_text(trial: Any) -> str:
    path = Path(trial.error_file) if trial.error_file else None
    if path and path.is_file():
        return path.read_text()[-5000:]
    return str(trial.get_error() or "the trial failed without an error message")


def _short(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "?"
    if abs(value) >= 1e5:
        return f"{value / 1e6:.2f}M"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.2f}"


def _echo(enabled: bool, line: str) -> None:
    if enabled:
        print(line, flush=True)
