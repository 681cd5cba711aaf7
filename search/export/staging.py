"""Publishing an export directory all at once: it is built in a hidden sibling and renamed into
place only when every step succeeded, so an interrupted export never leaves a directory that
looks complete. Plain file operations; no torch."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from search.export.errors import ExportError


def check_target(out: Path, force: bool) -> None:
    """Raises ExportError if `out` exists and may not be replaced."""
    if out.exists() and not force:
        raise ExportError(f"{out} exists; pass --force to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")


@contextlib.contextmanager
def staging(out: Path, force: bool) -> Iterator[Path]:
    """A hidden directory beside `out` that becomes `out` only if the block completes.

    Until the final rename nothing at `out` changes, so an interrupted export leaves no
    directory that looks complete (at most a hidden `.<name>.partial-*`, removed on errors).
    Before the rename every file gets the mode the umask allows (`_share_files`).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        _share_files(tmp)
        _move_into_place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _share_files(directory: Path) -> None:
    """Give every file the mode the umask allows.

    safetensors writes weights through a private temporary file (mode 0600), but a shipped
    model is read by other users and services.
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _move_into_place(tmp: Path, out: Path, force: bool) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    check_target(out, force)  # it may have appeared while we worked
    old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
