"""The Pareto plot as a user sees it: `shrink-sweep ui` over a finished tiny sweep, the sweep's
run page in headless Chromium, its Artifacts tab, and plotly's markers counted in the frame
where the UI shows pareto.html. Nothing but the UI server on 127.0.0.1 may be contacted.

Chromium is Debian's (`apt-get install chromium`): Playwright's own browser download needs the
internet. `.ci/run` installs it; without it, or without playwright, the test skips.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_sweep import shrink_sweep, sweep_runs, write_space

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, FrameLocator, Page, Route

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


@pytest.fixture
def store(tmp_path: Path, tiny_t5_path: Path) -> Path:
    """The MLflow store of a finished two-trial sweep, run as a user runs it."""
    done = shrink_sweep("run", str(write_space(tmp_path, tiny_t5_path)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "mlflow"


@pytest.fixture
def ui_url(store: Path, tmp_path: Path) -> Iterator[str]:
    """`shrink-sweep ui` on that store and a free port; stopped, with its workers, afterwards."""
    port = _free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "search.cli", "ui", "--store", str(store), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the uvicorn and job workers too
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_until_healthy(url, server, log)
            yield url
        finally:
            _stop(server)


def test_the_run_page_shows_the_pareto_plot_with_a_marker_per_trial(ui_url: str, store: Path):
    _, parent, children = sweep_runs(store)
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 2
    front = int(parent.data.metrics["front_size"])
    run_page = f"{ui_url}#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            context = browser.new_context(service_workers="block")  # so routing sees everything
            requested, blocked = _only_local(context, ui_url)
            plot = _open_artifact(context.new_page(), run_page, "pareto.html")
            plot.locator(".scatterlayer path.point").first.wait_for()
            markers = plot.locator(".scatterlayer").evaluate(MARKERS_PER_TRACE)
            title = plot.locator(".gtitle").text_content()
        finally:
            browser.close()

    expected = {"trials": len(finished) - front, "Pareto front": front}
    assert markers == {name: n for name, n in expected.items() if n}  # plotly skips empty traces
    assert title == parent.info.run_id
    fetched = f"{ui_url}get-artifact?path=pareto.html&run_uuid={parent.info.run_id}"
    assert fetched in requested  # the frame shows the artifact the server sent
    assert blocked == []


def _open_artifact(page: Page, run_page: str, name: str) -> FrameLocator:
    """Click through the run page to an artifact; returns the frame the UI shows it in."""
    page.set_default_timeout(TIMEOUT_S * 1000)
    page.goto(run_page)
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_label(name, exact=True).click()  # the file in the artifact tree
    return page.frame_locator("iframe")


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
    whatever of it is left: MLflow's job consumers can outlive the server."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()
