"""The few lines that adapt one trial (`trainables.trial.run_trial`) to Ray Tune.

A module of its own, apart from the driver's Ray and Optuna wiring, so that a trial worker
unpickling `tune_trial` imports only what a trial needs: this, the pure `search.space.suggest` and
`search.strategy.halving` (with the config they read), and `trainables`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from search.driver.progress import step_reporter
from search.space.config import SchedulerConfig
from search.space.suggest import plan
from search.strategy.halving import rung_config
from trainables.config import DecodingConfig
from trainables.train import total_steps
from trainables.trial import PackedModel, run_trial


def tune_trial(
    params: dict[str, Any],
    *,
    base: PackedModel,
    data: Any,
    decoding: DecodingConfig,
    parent_layers: tuple[int, int],
    scheduler: SchedulerConfig | None = None,
    memory_limit: int | None = None,
    receiver: Any = None,
    finished: dict[str, dict[str, float]] | None = None,
    board: Any = None,
) -> None:
    """Ray Tune's entry point for one trial: plan it, run it, send its weights, report.

    Every report carries `node`, the Ray node id: Ray's own `node_ip` is the same for every
    node of one machine, so it cannot say where a trial ran.

    Args:
        scheduler: the sweep's early stopping, which says at which steps the trial reports a
            (cheap) rung result; None or `fifo`: none.
        memory_limit: bytes a training step may use (`resources.memory_gib`); None: the
            trial's share of its device.
        receiver: the driver's `search.driver.weights.WeightsReceiver` actor, or None to keep no
            weights. The weights travel to it as bytes, not as a Tune checkpoint: Ray persists
            a checkpoint to `storage_path`, which a node without a shared disk cannot reach.
            The last report's `weights` is where the driver keeps them.
        finished: metrics of trials that MLflow records as finished, given when a sweep is
            resumed. Ray's experiment state is saved every few seconds, so a trial can finish
            after the last save and before a crash; it is replayed from its record, not rerun.
        board: the driver's `search.driver.progress.ProgressBoard` actor, told the trial's steps;
            None to tell no one.
    """
    import ray
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    replay = (finished or {}).get(trial_id)
    if replay is not None:
        tune.report({**replay, "final": 1, "replayed": 1})
        return
    trial_config = plan(params, parent_layers)
    if scheduler is not None:
        steps = total_steps(trial_config.train, len(data.train_input_ids))
        trial_config = dataclasses.replace(trial_config, rungs=rung_config(scheduler, steps))
    resources = tune.get_context().get_trial_resources().required_resources
    node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, float]) -> None:
        tune.report({**metrics, "node": node})

    on_step = None
    if board is not None:
        label = (
            f"{len(trial_config.encoder_layers)}+{len(trial_config.decoder_layers)} "
            f"{trial_config.strategy}"
        )
        on_step = step_reporter(board, trial_id, label)

    with tempfile.TemporaryDirectory() as tmp:
        result = run_trial(
            trial_config,
            base,
            data,
            decoding,
            report=report,
            save_dir=Path(tmp) / "model",
            threads=max(1, int(resources.get("CPU", 1))),
            gpu_share=min(1.0, resources.get("GPU", 0)) or 1.0,
            memory_limit=memory_limit,
            on_step=on_step,
        )
        weights = {}
        if receiver is not None:
            packed = PackedModel.from_directory(trial_id, Path(tmp) / "model")
            weights["weights"] = ray.get(receiver.save.remote(trial_id, packed))
    tune.report({**result.metrics, "final": 1, "node": node, **weights})
