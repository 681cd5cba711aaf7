"""Scale out (issue 6): a sweep on a two-node Ray cluster, and a sweep tracked by an MLflow
server over HTTP with its Optuna study in a database named by URL.

Where the OS allows it (root, or CAP_SYS_ADMIN), the cluster's second node runs in a mount
namespace of its own in which the test's directories are empty: like a machine without a shared
disk, it sees neither the base model's files nor the driver's store.

Every process a test starts (two Ray nodes, an MLflow server) leads its own process group on
127.0.0.1 ports the OS handed out, and the fixture ends exactly that group, whatever happened.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient
from test_sweep import shrink_sweep, sweep_runs, write_space

from search.record.tracker import Tracker

COMPLETE = optuna.trial.TrialState.COMPLETE
STARTUP = 240  # seconds for a node or a server to come up on a busy 2-core machine
# A node's ports with fixed defaults, on which two Rays of one machine would collide.
NODE_PORTS = (
    "dashboard-agent-listen",
    "dashboard-agent-grpc",
    "runtime-env-agent",
    "metrics-export",
)

# Run by a fresh Python: connect to the cluster, wait until both nodes are alive, and print
# {node id: is the head}. The test process itself never connects to Ray.
_LIST_NODES = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
deadline = time.monotonic() + float(sys.argv[2])
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) == int(sys.argv[3]) or time.monotonic() > deadline:
        break
    time.sleep(1)
print(json.dumps({n["NodeID"]: "node:__internal_head__" in n["Resources"] for n in alive}))
"""

# Run as `sh -c` in a new mount namespace: an empty tmpfs over each directory in SHRINK_HIDDEN,
# then exec the node, which so keeps the pid that leads its process group.
_HIDE_THEN_EXEC = 'for d in $SHRINK_HIDDEN; do mount -t tmpfs x "$d" || exit 1; done; exec "$@"'


@dataclass(frozen=True)
class Cluster:
    address: str
    head: str  # the Ray node ids
    other: str
    hidden: tuple[Path, ...]  # directories the other node sees empty (none if the OS forbids)


@dataclass(frozen=True)
class Server:
    uri: str
    artifacts: Path  # the server's --artifacts-destination


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_group(argv: list[str], log: Path, **env: str) -> subprocess.Popen:
    """Start `argv` as the leader of a new process group, its output going to `log`."""
    with log.open("w") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )


def stop_group(process: subprocess.Popen, grace: float = 5.0) -> None:
    """End the process group `process` leads: SIGTERM, then SIGKILL what is left.

    The leader is reaped last, so its id (the group's id) cannot be reused meanwhile.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_members(process.pid):
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30  # a killed process may take a moment to be gone
    while time.monotonic() < deadline and group_members(process.pid):
        time.sleep(0.2)
    process.wait(timeout=60)


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of a process group."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def start_ray_node(temp_dir: Path, *args: str, hidden: tuple[Path, ...] = ()) -> subprocess.Popen:
    """`ray start --block` with one CPU, its own temp dir and every fixed-default port free.

    Args:
        hidden: directories the node and its workers see as empty (see `can_hide`).
    """
    argv = [
        "ray", "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
        f"--temp-dir={temp_dir}", "--disable-usage-stats", "--object-store-memory=200000000",
        *(f"--{name}-port={free_port()}" for name in NODE_PORTS), *args,
    ]  # fmt: skip
    if hidden:
        namespace = ["unshare", "--mount", "--propagation", "private"]
        argv = [*namespace, "sh", "-c", _HIDE_THEN_EXEC, "sh", *argv]
    shown = " ".join(map(str, hidden))
    return start_group(argv, temp_dir.with_suffix(".log"), SHRINK_HIDDEN=shown)


def can_hide() -> bool:
    """Whether a child may get a mount namespace of its own (root, or CAP_SYS_ADMIN)."""
    with contextlib.suppress(OSError):  # no unshare at all
        return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0
    return False


def mount_points(pid: int) -> set[Path]:
    """Where the mount namespace of process `pid` has something mounted."""
    lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    return {Path(line.split()[4]) for line in lines}


def alive_nodes(address: str, count: int = 2) -> dict[str, bool]:
    done = subprocess.run(
        [sys.executable, "-c", _LIST_NODES, address, str(STARTUP), str(count)],
        capture_output=True,
        text=True,
        timeout=STARTUP + 120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def ray_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_t5_path: Path
) -> Iterator[Cluster]:
    """A head and a second node on 127.0.0.1, one CPU each, with a token of their own
    (`token_environment`). The second node sees `tmp_path` (the sweep's store) and the tiny
    model's directory empty, if the OS allows it.
    """
    root, address = token_environment(monkeypatch)
    nodes = []
    try:
        head_args = ("--head", f"--port={address.split(':')[1]}", "--include-dashboard=false")
        nodes.append(start_ray_node(root / "head", *head_args, f"--dashboard-port={free_port()}"))
        hidden = (tmp_path.resolve(), tiny_t5_path.resolve()) if can_hide() else ()
        nodes.append(start_ray_node(root / "node", f"--address={address}", hidden=hidden))
        nodes_alive = alive_nodes(address)
        assert sorted(nodes_alive.values()) == [False, True], (root / "node.log").read_text()
        assert set(hidden) <= mount_points(nodes[1].pid)
        head = next(node for node, is_head in nodes_alive.items() if is_head)
        other = next(node for node, is_head in nodes_alive.items() if not is_head)
        yield Cluster(address, head, other, hidden)
    finally:
        for node in reversed(nodes):
            stop_group(node)
        leftovers = [p.pid for node in nodes for p in group_members(node.pid)]
        shutil.rmtree(root, ignore_errors=True)
    assert leftovers == []


@pytest.fixture
def gpu_node(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """One node on 127.0.0.1 with 2 CPUs that advertises 2 GPUs it does not have; its address."""
    root, address = token_environment(monkeypatch)
    port = address.split(":")[1]
    args = ("--head", f"--port={port}", "--include-dashboard=false", "--num-cpus=2")
    node = start_ray_node(root / "head", *args, "--num-gpus=2", f"--dashboard-port={free_port()}")
    try:
        assert list(alive_nodes(address, count=1).values()) == [True], (
            root / "head.log"
        ).read_text()
        yield address
    finally:
        stop_group(node)
        leftovers = [p.pid for p in group_members(node.pid)]
        shutil.rmtree(root, ignore_errors=True)
    assert leftovers == []


def token_environment(monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A token of the test's own in the environment (which the sweep's subprocess inherits:
    Ray then neither creates nor needs ~/.ray/auth_token); a short temp dir for Ray's socket
    paths, which are bounded; and a free address for the head."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return Path(tempfile.mkdtemp(prefix="shrink-ray-")), f"127.0.0.1:{free_port()}"


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[Server]:
    """`mlflow server` on a free 127.0.0.1 port, with SQLite runs and proxied artifacts."""
    root = tmp_path / "server"
    root.mkdir()
    uri = f"http://127.0.0.1:{free_port()}"
    argv = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
        "--port", uri.rsplit(":", 1)[1], "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    # No background job runners (seven processes): the tests need runs and artifacts only.
    server = start_group(argv, root / "server.log", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    try:
        wait_until_healthy(uri, server, root / "server.log")
        yield Server(uri, root / "artifacts")
    finally:
        stop_group(server)
    assert group_members(server.pid) == []


def wait_until_healthy(uri: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{uri}/health", timeout=5) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(1)
    raise AssertionError(f"no healthy MLflow server at {uri}: {log.read_text()[-3000:]}")


# --- a cluster -------------------------------------------------------------------------------


@pytest.mark.slow
def test_trials_run_on_both_nodes_of_a_cluster(
    tmp_path: Path, tiny_t5_path: Path, ray_cluster: Cluster
) -> None:
    """With one CPU per node and per trial, two trials at a time run on different nodes, and
    the weights of every trial reach the driver's store through Ray, not through a disk; the
    preparation's workers (pseudo-labels, the screen) run on both nodes too."""
    # Trials long enough that the second starts while the first still holds its node.
    train = {"learning_rate": 1.0e-2, "max_steps": 60, "batch_size": 8, "eval_every": 30}
    train["targets"] = ["gold", "pseudo"]
    space = write_space(
        tmp_path,
        tiny_t5_path,
        trials=4,
        resources={"cpus": 1},
        train=train,
        keep_weights="all",
        sampler={"screen": 8},
    )
    # As a user joins a cluster that `ray start` made: with its token and nothing else.
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done = shrink_sweep("run", str(space), "--address", ray_cluster.address, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    store = tmp_path / "mlflow"
    client, parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED"
    # 200 sources in 16 shards and the screen's students, on a worker per node.
    labels = parent.data.tags["shrink_sweep.pseudo_labels"]
    assert labels == "generated on 2 workers (cpu) on 2 nodes"
    assert parent.data.tags["shrink_sweep.screen_where"] == "on 2 workers (cpu) on 2 nodes"
    assert [c.info.status for c in children] == ["FINISHED"] * 4
    nodes = Counter(c.data.tags["node"] for c in children)
    assert set(nodes) == {ray_cluster.head, ray_cluster.other}, nodes
    # Why the node id: both nodes of one machine report the same node_ip.
    assert len({c.data.tags["node_ip"] for c in children}) == 1
    for child in children:
        history = client.get_metric_history(child.info.run_id, "rougeL")
        assert sorted(m.step for m in history) == [30, 60]
        assert child.data.metrics["params"] > 0
        # The weights came back to the driver's store, from either node; the other node sees
        # neither the store nor the base model's directory (`ray_cluster.hidden`).
        trial = child.data.tags["shrink_sweep.trial_id"]
        weights = store.resolve() / "ray" / parent.info.run_name / "weights" / trial
        assert Path(child.data.tags["checkpoint"]) == weights
        assert (weights / "config.json").is_file()
        assert (weights / "model.safetensors").stat().st_size > 0
    # Ray Tune kept no checkpoint: it would need its storage path on a disk every node shares.
    assert list((store / "ray").rglob("checkpoint_*")) == []

    study = optuna.load_study(
        study_name=parent.info.run_name, storage=f"sqlite:///{store / 'optuna.db'}"
    )
    assert [t.state for t in study.trials] == [COMPLETE] * 4
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "pareto.html"} <= artifacts


@pytest.mark.slow
def test_half_a_gpu_each_runs_four_trials_at_once_on_two_gpus(
    tmp_path: Path, tiny_t5_path: Path, gpu_node: str
) -> None:
    """`resources.gpus: 0.5` packs two trials on each of the 2 GPUs the node advertises: 4 run
    at once (torch finds no GPU in them and trains on the CPU), each planning its memory on
    half a device (`micro_batch_size: auto`)."""
    train = {"learning_rate": 1.0e-2, "max_steps": 40, "batch_size": 8, "micro_batch_size": "auto"}
    space = write_space(
        tmp_path, tiny_t5_path, trials=4, train=train, resources={"cpus": 0.5, "gpus": 0.5}
    )
    done = shrink_sweep("run", str(space), "--address", gpu_node, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    _, parent, children = sweep_runs(tmp_path / "mlflow")
    assert [r.info.status for r in (parent, *children)] == ["FINISHED"] * 5
    starts = sorted(c.info.start_time for c in children)
    ends = sorted(c.info.end_time for c in children)
    assert starts[-1] < ends[0]  # the last trial started before the first ended: 4 at once
    assert {c.data.metrics["micro_batch_size"] for c in children} == {8.0}


@pytest.mark.slow
def test_a_cluster_that_refuses_the_driver_is_named_with_the_fix(
    tmp_path: Path, tiny_t5_path: Path, ray_cluster: Cluster
) -> None:
    """Without the cluster's token (none in the environment, none in ~/.ray), joining fails
    with one message naming the fix, exit 2, and nothing written."""
    space = write_space(tmp_path, tiny_t5_path)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    done = shrink_sweep(
        "run",
        str(space),
        "--address",
        ray_cluster.address,
        cwd=tmp_path,
        env={**env, "HOME": str(home)},
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"the Ray cluster at {ray_cluster.address} did not let this driver join" in done.stderr
    assert "RAY_AUTH_TOKEN" in done.stderr and "ray get-auth-token" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow").exists()


# --- an MLflow server ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_tracked_by_a_server_with_its_study_in_a_database(
    tmp_path: Path, tiny_t5_path: Path, mlflow_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    space = write_space(tmp_path, tiny_t5_path)
    study_url = f"sqlite:///{tmp_path / 'shared' / 'optuna.db'}"
    store = tmp_path / "store"
    where = ("--tracking-uri", mlflow_server.uri, "--store", str(store))
    done = shrink_sweep("run", str(space), *where, "--optuna-storage", study_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags["shrink_sweep.kind"] == "sweep"]
    children = [r for r in runs if r.data.tags["shrink_sweep.kind"] == "trial"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna_storage"] == study_url
    assert [c.info.status for c in children] == ["FINISHED"] * 2
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert 0 <= child.data.metrics["rougeL"] <= 100
        assert child.data.metrics["params"] > 0
        history = client.get_metric_history(child.info.run_id, "rougeL")
        assert sorted(m.step for m in history) == [4, 8]

    # The artifacts went through the server to its destination, not to the driver's disk.
    artifacts = {a.path: a for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "pareto.html", "space.yaml"} <= set(artifacts)
    table = client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(table).read_text())))
    assert sorted(r["trial"] for r in rows) == sorted(
        c.data.tags["shrink_sweep.trial_id"] for c in children
    )
    assert len(list(mlflow_server.artifacts.rglob("pareto.html"))) == 1
    assert not (store / "artifacts").exists() and not (store / "mlflow.db").exists()

    # The study is in the named database, not in the store.
    study = optuna.load_study(study_name=parent.info.run_name, storage=study_url)
    assert [t.state for t in study.trials] == [COMPLETE] * 2
    assert not (store / "optuna.db").exists()

    # What resuming reads (the sweep's own space.yaml) and `pareto` come back from the server.
    tracker = Tracker(mlflow_server.uri, "tiny")
    stored = yaml.safe_load(tracker.read_text(parent.info.run_id, "space.yaml"))
    assert stored == yaml.safe_load(space.read_text())
    plot = ("--plot", "front.html")
    shown = shrink_sweep("pareto", "--space", str(space), *where, *plot, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert (tmp_path / "front.html").stat().st_size == artifacts["pareto.html"].file_size
