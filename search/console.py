"""What a command shows on the terminal: its own progress lines and table cells. The
libraries' progress bars are off, and their log messages and warnings go to a log file in the
store (`keep_log`), or to stderr as well with -v, so that those lines are the only ones."""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import MemoryHandler
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log through handlers of their own; theirs are removed so that every message
# reaches the root logger's handlers below.
_OWN_HANDLERS = ("mlflow", "transformers", "datasets", "optuna")
# Messages wait here until the store exists (a command refused for bad input writes no file).
_held = MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)
_live = logging.StreamHandler(sys.stderr)
_file: logging.Handler | None = None


def echo(enabled: bool, line: str) -> None:
    """Print a progress line at once, if progress is shown."""
    if enabled:
        print(line, flush=True)


def cell(value: Any) -> str:
    """A metric or setting as one table cell: large numbers with separators, others to 2 places."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.2f}"
    return "-" if value is None else str(value)


def quiet_libraries(verbose: bool = False) -> None:
    """Our own progress lines replace Ray's tables and the libraries' progress bars; the
    libraries' log messages and warnings are held for the log file (`keep_log`), and shown on
    stderr too when `verbose`."""
    # Before the libraries are imported: MLflow then installs no handler of its own.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    import datasets
    import optuna
    import transformers

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # read on each download
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    to_root(*_OWN_HANDLERS)
    logging.captureWarnings(True)  # warnings become log records of "py.warnings"
    global _file
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in (_held, _live, _file):
        root.removeHandler(handler)
    if _file is not None:  # an earlier command's file, in this same process
        _file.close()
        _file = None
    _held.setTarget(None)
    _held.buffer.clear()
    root.addHandler(_held)
    _live.setFormatter(logging.Formatter(LOG_FORMAT))
    if verbose:
        root.addHandler(_live)


def to_root(*names: str) -> None:
    """Send the named loggers' messages to the root logger's handlers (the log file), not to
    handlers of their own; Ray, for one, installs its own when imported."""
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def keep_log(path: Path) -> Path:
    """Write the libraries' messages, those held so far and all that follow, to `path`.

    Returns:
        `path`, for the command to print once.
    """
    global _file
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if _file is not None:
        root.removeHandler(_file)
        _file.close()
    _file = logging.FileHandler(path, encoding="utf-8")
    _file.setFormatter(logging.Formatter(LOG_FORMAT))
    _held.setTarget(_file)
    _held.flush()
    root.removeHandler(_held)
    root.addHandler(_file)
    return path
