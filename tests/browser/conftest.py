"""Browser tests: Debian's chromium through Selenium and chromium-driver, against a real node.

Nothing here downloads a browser or a driver: Selenium is given both paths, so its
Selenium Manager never runs (``SE_OFFLINE`` is set as well). Without chromium or
chromedriver the tests skip, and fail when ``CI=true`` (scripts/install-tools.sh installs
both). Screenshots go to ``$DICOM_AI_NODE_SCREENSHOTS`` or a ``screenshots`` folder in
pytest's temporary folder; the end of the run prints where.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image
from pydicom.dataset import Dataset
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from dicom_ai_node.send.scu import Peer, send_datasets

from ..conftest import (
    IN_CI,
    REPO,
    NodeProcess,
    assert_no_phi_in_file,
    free_port,
    wait_for_port,
    write_node_config,
)
from ..orthanc import RecordingStoreSCP

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)
PAGE_LOAD_TIMEOUT_S = 30
SCRIPT_TIMEOUT_S = 10
#: Where the screenshots folder is kept for the end-of-run line.
SHOTS_KEY = pytest.StashKey[Path]()
#: Whether a test's call failed (for the browser fixture to keep what the page showed).
FAILED_KEY = pytest.StashKey[bool]()
#: Seconds a delivery is retried before it fails (short, for the failures screen).
RETRY_WINDOW_S = 4.0

#: Users made with the command line before the node starts: name -> (role, password).
USERS = {
    "alice": ("operator", "alice-operator-pw"),
    "bob": ("viewer", "bob-viewer-pw"),
    "ada": ("admin", "ada-admin-pw"),
}


def require_browser() -> None:
    """Chromium and chromedriver at Debian's paths; fail in CI, skip elsewhere."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    message = f"{', '.join(missing)} missing (scripts/install-tools.sh installs them)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder screenshots go to: ``$DICOM_AI_NODE_SCREENSHOTS`` or a temporary one."""
    chosen = os.environ.get("DICOM_AI_NODE_SCREENSHOTS", "")
    folder = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash[SHOTS_KEY] = folder.resolve()
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the screenshots are, when a test took any."""
    folder = terminalreporter.config.stash.get(SHOTS_KEY, None)
    if folder is not None and any(folder.glob("*.png")):
        terminalreporter.write_line(f"browser screenshots: {folder}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember a failed test, so its browser can save the page it was on."""
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED_KEY] = True
    return report


def save_screenshot(driver: WebDriver, folder: Path, name: str) -> Path:
    """The browser's window as ``<folder>/<name>.png``, reduced to a 256-colour palette
    (screens are flat colours and text; this keeps each file small for the docs)."""
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    path = folder / f"{name}.png"
    image.quantize(colors=256).save(path, optimize=True)
    return path


@pytest.fixture
def browser(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    screenshots: Path,
) -> Iterator[WebDriver]:
    """Headless chromium showing pages at 1280x900 CSS pixels, with bounded page-load and
    script timeouts.

    When the test fails, the page it was on is kept as ``failed/<test>.png`` and
    ``.html`` in the screenshots folder.
    """
    require_browser()
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root (containers)
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "driver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        # the window's own frame takes part of --window-size: make the page itself 1280x900
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
        driver.set_window_size(2 * WINDOW[0] - inner[0], 2 * WINDOW[1] - inner[1])
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
        driver.set_script_timeout(SCRIPT_TIMEOUT_S)
        yield driver
        if request.node.stash.get(FAILED_KEY, False):
            (screenshots / "failed").mkdir(exist_ok=True)
            save_screenshot(driver, screenshots / "failed", request.node.name)
            (screenshots / "failed" / f"{request.node.name}.html").write_text(driver.page_source)
    finally:
        driver.quit()


@dataclass
class WebNode:
    """A ``dicom-ai-node serve`` process on its DICOM and web ports, and its PACS.

    Results go back to the sender's AE, ``PACS``: a recording storescp a test may stop
    (deliveries then fail) and start again on the same port.
    """

    folder: Path
    process: NodeProcess
    dicom_port: int
    web_port: int
    pacs: RecordingStoreSCP
    studies: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def send(self, datasets: list[Dataset]) -> str:
        """Store ``datasets`` on the node over DICOM (calling AE ``PACS``); their study UID."""
        outcomes = send_datasets(
            datasets, Peer("AI_NODE", "127.0.0.1", self.dicom_port), calling_ae_title="PACS"
        )
        assert all(o.delivered for o in outcomes), [o for o in outcomes if not o.delivered]
        return str(datasets[0].StudyInstanceUID)


def _cli(config: Path, *args: str, stdin: str = "") -> None:
    subprocess.run(
        [sys.executable, "-m", "dicom_ai_node.cli", "-c", str(config), *args],
        input=stdin.encode(),
        check=True,
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def web_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    """A node on free DICOM and web ports, with users alice (operator), bob (viewer) and
    ada (admin) made from the shell before it starts; stopped after the module.

    A delivery gives up after a few seconds (``send.retry_window_s``), so one to a stopped
    PACS soon is a failure the failures screen can retry.
    """
    require_browser()
    folder = tmp_path_factory.mktemp("web-node")
    dicom_port, web_port = free_port(), free_port()
    pacs = RecordingStoreSCP(folder / "pacs", ae_title="PACS")
    config = write_node_config(
        folder,
        f"sqlite:///{folder / 'node.db'}",
        dicom_port,
        [("PACS", pacs.port)],
        quiet_s=0.5,
        web_port=web_port,
    )
    text = config.read_text()
    assert "\n[send]\n" in text
    config.write_text(text.replace("\n[send]\n", f"\n[send]\nretry_window_s = {RETRY_WINDOW_S}\n"))
    for name, (role, password) in USERS.items():
        _cli(config, "users", "add", name, "--role", role, stdin=password + "\n")
    node = NodeProcess(config, dicom_port, folder / "node.log")
    pacs.start()
    try:
        node.start()
        wait_for_port(web_port, 30, node.proc)
        yield WebNode(folder, node, dicom_port, web_port, pacs)
    finally:
        node.stop()
        pacs.stop()
    assert_no_phi_in_file(node.log_path)


def log_in(driver: WebDriver, node: WebNode, username: str) -> None:
    """Sign in through the login form and wait until the login page is left."""
    driver.get(f"{node.url}/ui/login")
    wait = WebDriverWait(driver, 15)
    wait.until(ec.presence_of_element_located((By.ID, "login-username"))).send_keys(username)
    driver.find_element(By.ID, "login-password").send_keys(USERS[username][1])
    driver.find_element(By.ID, "login-submit").click()
    wait.until(lambda d: "/ui/login" not in d.current_url)
