"""Where a sweep keeps its state on disk: the store's layout, and nothing that needs Ray.

Light on purpose: `shrink-sweep pareto` and `export` find the store's artifacts through it
without importing the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

    @property
    def pseudo_labels(self) -> Path:
        """The base model's pseudo-labels, one file per model, data and decoding."""
        return self.store.resolve() / "pseudo-labels"

    def log(self, sweep: str) -> Path:
        """The sweep's log file: the libraries' messages and warnings (`search.console`)."""
        return self.store.resolve() / "logs" / f"{sweep}.log"

    def weights(self, sweep: str) -> Path:
        """Where the driver keeps the trials' weights, one model directory per trial."""
        return self.ray / sweep / "weights"

    @property
    def optuna_url(self) -> str:
        return self.study or f"sqlite:///{self.store.resolve() / 'optuna.db'}"
