"""The Pareto plot as a user sees it: `shrink-sweep ui` over a finished tiny sweep, the links it
prints opened in headless Chromium (the plot on the sweep's run page, plotly's markers counted
in the frame where the UI shows pareto.html; the experiment in MLflow's runs view), and the
UI's processes and memory. Nothing but the UI server on 127.0.0.1 may be contacted.

Chromium is Debian's (`apt-get install chromium`): Playwright's own browser download needs the
internet. `.ci/run` installs it; without it, or without playwright, the test skips.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
from test_sweep import sweep_runs

from search.front.plot import KNEE_NAME, TEACHER_NAME
from search.record.store import EXPERIMENT_KIND_TAG, TRAINING_KIND, TRAINING_VIEW

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Route

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no {CHROMIUM} (apt-get install chromium, as .ci/run does)"
    ),
]

# Generous: on a busy 2-core machine the UI takes a minute to start and the 4.6 MB plot a while.
TIMEOUT_S = 300
# {trace name: markers drawn}, read from plotly's SVG; each trace group carries its trace.
MARKERS_PER_TRACE = """layer => Object.fromEntries(Array.from(layer.querySelectorAll("g.trace"),
    g => [g.__data__[0].trace.name, g.querySelectorAll("path.point[d]").length]))"""


@pytest.fixture(scope="module")
def store(tiny_sweep_store: Path) -> Path:
    """The store of the tiny sweep the slow tests share (conftest.py)."""
    return tiny_sweep_store


@dataclass(frozen=True)
class UI:
    url: str  # the UI's root, with a trailing slash
    links: dict[str, str]  # what `shrink-sweep ui` printed: "plot", "run", "experiment"
    server: subprocess.Popen


@pytest.fixture(scope="module")
def ui(store: Path) -> Iterator[UI]:
    """`shrink-sweep ui` on that store and a free port; stopped, with its workers, afterwards."""
    port = _free_port()
    log = store.parent / "ui.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "search.cli", "ui", "--store", str(store), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the uvicorn workers too
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_until_healthy(url, server, log)
            yield UI(url, _printed_links(log.read_text()), server)
        finally:
            _stop(server)


def _printed_links(output: str) -> dict[str, str]:
    labels = {
        "latest sweep": "run",
        "its Pareto plot": "plot",
        "its experiment's runs": "experiment",
    }
    links = {}
    for line in output.splitlines():
        label, _, url = line.rpartition(": ")
        for start, key in labels.items():
            if label.startswith(start) and url.startswith("http://127.0.0.1:"):
                links[key] = url
    return links


def test_the_printed_plot_link_shows_the_pareto_plot_with_a_marker_per_trial(ui: UI, store: Path):
    _, parent, children = sweep_runs(store)
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 2
    front = int(parent.data.metrics["front_size"])
    page_of_run = f"#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    assert ui.links["plot"] == f"{ui.url}{page_of_run}/artifacts/pareto.html?{TRAINING_VIEW}"
    assert ui.links["run"] == f"{ui.url}{page_of_run}?{TRAINING_VIEW}"

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = browser.new_context(service_workers="block")  # so routing sees everything
            requested, blocked = _only_local(context, ui.url)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_S * 1000)
            page.goto(ui.links["plot"])
            plot = page.frame_locator("iframe")
            plot.locator(".scatterlayer path.point").first.wait_for()
            markers = plot.locator(".scatterlayer").evaluate(MARKERS_PER_TRACE)
            title = plot.locator(".gtitle").text_content()
        finally:
            browser.close()

    # The knee, export's default pick, is drawn once more, as a star over its front marker; the
    # teacher's own summaries are one reference point beside the trials.
    expected = {"trials": len(finished) - front, "Pareto front": front, KNEE_NAME: min(front, 1)}
    expected[TEACHER_NAME] = 1
    assert markers == {name: n for name, n in expected.items() if n}  # plotly skips empty traces
    assert title.startswith(f"{parent.info.run_name}: rougeL (max) vs params (min)")
    fetched = f"{ui.url}get-artifact?path=pareto.html&run_uuid={parent.info.run_id}"
    assert fetched in requested  # the frame shows the artifact the server sent
    assert blocked == []


def test_the_experiment_opens_in_the_runs_view(ui: UI, store: Path):
    client, parent, _ = sweep_runs(store)
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND  # set when the sweep made it
    assert ui.links["experiment"] == (
        f"{ui.url}#/experiments/{experiment.experiment_id}?{TRAINING_VIEW}"
    )

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = browser.new_context(service_workers="block")  # a first visit: no settings
            _, blocked = _only_local(context, ui.url)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_S * 1000)
            page.goto(ui.links["experiment"])
            # The runs view, not the GenAI overview (#/experiments/ID/overview or /traces).
            page.wait_for_url(re.compile(rf"#/experiments/{experiment.experiment_id}/runs\b"))
            page.get_by_text(parent.info.run_name, exact=True).first.wait_for()
        finally:
            browser.close()
    assert blocked == []


def test_the_ui_starts_no_job_workers(ui: UI):
    # MLflow's job runner and its huey consumers (GenAI judges, scheduled trace jobs) would be
    # ~8 more Python processes; browsing runs and artifacts (the tests above) needs none.
    tree = psutil.Process(ui.server.pid).children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in tree]
    assert not [c for c in commands if "huey" in c or "_job_runner" in c], commands
    assert len(tree) <= 2, commands  # uvicorn's supervisor and its one worker
    rss = sum(p.memory_info().rss for p in [psutil.Process(ui.server.pid), *tree])
    assert rss < 1.0e9  # 0.49 GB here; 2.5 GB with MLflow's defaults (4 workers, job workers)


def _only_local(context: BrowserContext, base: str) -> tuple[list[str], list[str]]:
    """Let through requests to `base` (and the page's own blobs); abort and list the others.

    Returns:
        Every URL the pages requested, and those that were blocked.
    """
    requested: list[str] = []
    blocked: list[str] = []

    def decide(route: Route) -> None:
        url = route.request.url
        requested.append(url)
        if url.startswith((base, f"blob:{base}", "data:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    context.route("**/*", decide)
    return requested, blocked


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    """Poll the UI's /health until it answers 200; fail with its log if it exits or hangs."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"shrink-sweep ui exited {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "health", timeout=10) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"shrink-sweep ui not up after {TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the UI's process group (its id is the server's: a new session), then SIGKILL
    whatever of it is left: MLflow's workers can outlive the server."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()
