"""What a sweep's record shares: the MLflow client, the sweep's experiment and parent run, and
the one way values are written to a run (`SweepRecord.log`)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# MLflow knows FINISHED, FAILED and KILLED; "stopped early" is KILLED plus the outcome tag.
# An infeasible proposal (it broke a constraint known before training) never ran: KILLED too.
STATUS = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED", "infeasible": "KILLED"}
BATCH_LIMIT = 100  # values MLflow takes in one log_batch call


@dataclass
class SweepRecord:
    """A sweep's place in MLflow: the client, its experiment and (once known) its parent run."""

    uri: str
    client: Any  # mlflow.tracking.MlflowClient
    experiment_id: str
    sweep_run_id: str | None = None

    def log(
        self,
        run_id: str,
        params: Mapping[str, Any] = {},
        metrics: Mapping[str, float] = {},
        step: int = 0,
    ) -> None:
        """Log params and finite metrics to a run, in batches MLflow accepts."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        metric_list = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        ]
        param_list = [Param(k, _param_text(v)) for k, v in params.items()]
        for i in range(0, max(len(metric_list), len(param_list)), BATCH_LIMIT):
            end = i + BATCH_LIMIT
            self.client.log_batch(run_id, metric_list[i:end], param_list[i:end])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set several tags of a run in one call."""
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def all_runs(self, query: str) -> list[Any]:
        """Every run of the experiment that matches `query`, page after page."""
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], query, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)[:6000]  # MLflow's limit on a param value
