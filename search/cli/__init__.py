"""`shrink-sweep`: a thin map from command names to functions (`commands`), read from the
command line by `parser`.

Exit codes: 0 done; 2 bad input (configuration, model, data, tracking store, export target),
reported before any work starts; 130 interrupted (Ctrl-C, or a sweep stopped before its end:
`run --resume` continues it); 1 a sweep that stopped after --max-failures failed trials, or in
which no trial finished.
"""

from __future__ import annotations

import logging
import os
import sys

from search.cli.commands import BAD_INPUT, INTERRUPTED
from search.cli.parser import build_parser
from search.space.config import ConfigError

__all__ = ["BAD_INPUT", "INTERRUPTED", "entry", "main"]


def entry() -> None:
    """The `shrink-sweep` command: `main`, then an exit that skips the interpreter's teardown.

    Freeing torch, transformers and Ray's C++ libraries at exit takes ~2 s here and writes
    nothing. Everything that does write is finished first: the command itself, a local Ray
    it started (shut down, not left running), logs and the output streams.
    """
    code = main()
    if "ray" in sys.modules:
        import ray

        ray.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return BAD_INPUT
    try:
        return args.command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:
        if _is_bad_input(err):
            print(f"shrink-sweep: error: {err}", file=sys.stderr)
            return BAD_INPUT
        raise


def _is_bad_input(err: Exception) -> bool:
    from search.export.errors import ExportError
    from search.record.store import TrackingError
    from trainables.data import DataError
    from trainables.trial import ModelError

    return isinstance(err, (ConfigError, DataError, ExportError, ModelError, TrackingError))
