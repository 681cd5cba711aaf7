"""What a command shows on the terminal: its own progress lines, table cells, and the
libraries' progress bars turned off so that those lines are the only ones."""

from __future__ import annotations

import os
from typing import Any


def echo(enabled: bool, line: str) -> None:
    """Print a progress line at once, if progress is shown."""
    if enabled:
        print(line, flush=True)


def cell(value: Any) -> str:
    """A metric or setting as one table cell: large numbers with separators, others to 2 places."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.2f}"
    return "-" if value is None else str(value)


def quiet_libraries() -> None:
    """Our own progress lines replace Ray's tables and the libraries' progress bars."""
    import datasets
    import optuna
    import transformers

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
