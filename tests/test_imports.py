"""The commands that only read (`--help`, `validate --file-only`, `pareto`) start without the
heavy libraries: neither ray nor torch nor transformers is imported. Each runs in a fresh
interpreter, which then reports what it imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from search.record.paths import SweepPaths
from search.record.store import default_uri
from search.record.tracker import Tracker

HEAVY = ("ray", "torch", "transformers")
REPO = Path(__file__).resolve().parents[1]

# Runs the CLI in-process, then prints its exit code and the heavy packages it imported.
PROBE = """
import json, sys
from search.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as done:  # argparse's --help
    code = done.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def imports_of(*argv: str, cwd: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{PROBE}", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_help_imports_nothing_heavy(tmp_path):
    assert imports_of("--help", cwd=tmp_path) == {"code": 0, "heavy": []}


def test_validate_file_only_imports_nothing_heavy(tmp_path):
    space = str(REPO / "space.yaml")
    assert imports_of("validate", "--file-only", space, cwd=tmp_path) == {"code": 0, "heavy": []}


def test_pareto_on_a_store_imports_nothing_heavy(tmp_path):
    store = tmp_path / "mlflow"
    tracker = Tracker(default_uri(store), "sweep", SweepPaths(store).artifacts)
    tracker.start_sweep("s1", {}, {})
    plot = tmp_path / "pareto.html"
    plot.write_text("<html></html>")
    tracker.log_sweep_artifact(plot)
    for trial, (rouge, params) in {"t1": (30.0, 2e6), "t2": (33.0, 3e6)}.items():
        run = tracker.trials.start(trial, {"encoder_layers": 2, "decoder_layers": 3}, {})
        tracker.trials.log_metrics(run, {"rougeL": rouge, "params": params}, step=1)
        tracker.trials.end(run, "finished")
    space = str(REPO / "space.yaml")
    out = tmp_path / "front.csv"
    argv = ("pareto", "--space", space, "--set", "name=sweep", "--store", str(store))
    assert imports_of(*argv, "--out", str(out), cwd=tmp_path) == {"code": 0, "heavy": []}
    assert out.read_text().count("\n") == 3  # the header and both trials, on the front
