"""Where trials' weights come back to: an actor on the driver's node that writes them to its disk.

A trial on another machine cannot write to the driver's disk, and a Tune checkpoint would need
`storage_path` on a disk (or bucket) every node shares. So a trial packs its model directory
(`trainables.trial.PackedModel`) and sends it to this actor through Ray's object store; the
actor writes a plain Hugging Face model directory under the sweep's own directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from trainables.trial import PackedModel


class WeightsReceiver:
    """Writes each trial's weights to `<directory>/<trial id>/`, replacing an earlier copy."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def save(self, trial_id: str, model: PackedModel) -> str:
        """Write a trial's model directory and return its path on the driver's machine.

        It is written beside its place and then renamed, so a directory at the returned path
        is always complete (a rerun trial replaces it whole).

        Raises:
            ValueError: `trial_id` is not a plain directory name.
        """
        if not trial_id or Path(trial_id).name != trial_id or trial_id.startswith("."):
            raise ValueError(f"not a trial id: {trial_id!r}")
        target = self.directory / trial_id
        partial = self.directory / f".{trial_id}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        model.unpack(partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        return str(target)
