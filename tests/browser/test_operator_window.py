"""The operator's window in a real browser (issue 16, deliverable 7).

Debian's chromium, driven by Selenium, against a ``dicom-ai-node serve`` process whose
results go to a recording storescp (the PACS). An operator signs in, sends a chest CT
over DICOM and watches its timeline reach "delivered" without reloading the page, looks
at the result's preview, runs the job again and sees revision 1 delivered, then stops the
PACS, sends the results again so the delivery fails, starts the PACS and retries the
failure from the failures screen. A viewer's pages hold no patient name, ID or birth
date. Each screen visited is saved as ``<screen>.png`` in the screenshots folder
(:func:`~tests.browser.conftest.save_screenshot`; ``update_screenshots.sh`` copies the
set into docs/screenshots).

The tests run in file order and share one node (module scope): the study the timeline
test sends is the one the later tests use (any of them sends it when run alone).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from dicom_ai_node.testing.series import (
    CANARY_PATIENT_ID,
    CANARY_PATIENT_NAME,
    make_ct_series,
    phi_canaries_in,
)

from .conftest import WebNode, log_in, save_screenshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Seconds a study may take from its last instance to its results at the PACS.
PIPELINE_S = 90
#: Seconds for a delivery to fail for good (retry window 4 s, attempts 1 s apart) or to
#: succeed once retried.
DELIVERY_S = 45
MODEL = "ct-chest-lungs"
T = TypeVar("T")


def by_testid(name: str) -> str:
    """CSS selector of an element by its ``data-testid``."""
    return f'[data-testid="{name}"]'


def find(driver: WebDriver, name: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, by_testid(name))


def wait_for(
    driver: WebDriver, what: str, check: Callable[[WebDriver], object], timeout_s: float = 15
) -> object:
    """Wait (bounded) until ``check`` answers something true; the message names ``what``."""
    wait = WebDriverWait(
        driver,
        timeout_s,
        poll_frequency=0.25,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )  # htmx swaps the refreshed parts: an element found may be replaced before it is read
    return wait.until(check, message=what)


def text_of(name: str) -> Callable[[WebDriver], str]:
    """A check that answers the text of the element ``name`` (empty while it is absent)."""

    def check(driver: WebDriver) -> str:
        # found and read in one script, so a refresh cannot replace it in between
        text = driver.execute_script(
            "const e = document.querySelector(arguments[0]);return e ? e.innerText.trim() : '';",
            by_testid(name),
        )
        return text if isinstance(text, str) else ""

    return check


def stable(read: Callable[[], T], tries: int = 20) -> T:
    """``read()`` again while the part of the page it reads was just replaced by a refresh."""
    for _ in range(tries - 1):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(0.1)
    return read()


def wait_text(driver: WebDriver, name: str, wanted: str, timeout_s: float = 15) -> None:
    """Wait until the element ``name`` says ``wanted`` (the page may refresh it meanwhile)."""
    read = text_of(name)
    try:
        wait_for(driver, f"{name} = {wanted}", lambda d: read(d) == wanted, timeout_s)
    except Exception as exc:
        raise AssertionError(f"{name} says {read(driver)!r}, not {wanted!r}") from exc


def mark_page(driver: WebDriver) -> None:
    """Leave a mark in the page's window that a reload or a navigation would wipe."""
    driver.execute_script("window.__notReloaded = true;")


def page_kept(driver: WebDriver) -> bool:
    return driver.execute_script("return window.__notReloaded === true;") is True


def loaded(image: WebElement) -> Callable[[WebDriver], bool]:
    """A check that says whether the browser has finished loading ``image``."""

    def check(driver: WebDriver) -> bool:
        return driver.execute_script("return arguments[0].complete;", image) is True

    return check


def flash(driver: WebDriver) -> WebElement:
    """The outcome of the action just taken (a message the redirect carries back)."""
    wait_for(
        driver, "flash message", lambda d: d.find_elements(By.CSS_SELECTOR, by_testid("flash"))
    )
    return find(driver, "flash")


def chest_ct(node: WebNode) -> str:
    """The module's study (a small chest CT the lung model takes), sent once; its UID."""
    if "chest" not in node.studies:
        _, datasets = make_ct_series(24, 128, 128, spacing_mm=(5.0, 2.8, 2.8), seed=16)
        node.studies["chest"] = node.send(datasets)
    return node.studies["chest"]


def current_job(driver: WebDriver) -> int:
    """The pk of the newest job on the timeline page."""
    ids = [
        e.get_attribute("data-testid") or ""
        for e in driver.find_elements(By.CSS_SELECTOR, "article.job")
    ]
    pks = [int(m.group(1)) for i in ids if (m := re.fullmatch(r"job-(\d+)", i))]
    assert pks, "no job on the timeline"
    return max(pks)


def delivered_study(browser: WebDriver, web_node: WebNode) -> str:
    """As the operator, send a chest CT and wait on its timeline until it is delivered."""
    log_in(browser, web_node, "alice")
    uid = chest_ct(web_node)
    browser.get(f"{web_node.url}/ui/studies/{uid}")
    wait_text(browser, "timeline-state", "delivered", PIPELINE_S)
    return uid


def test_sign_in_and_the_status_screen(
    browser: WebDriver, web_node: WebNode, screenshots: Path
) -> None:
    browser.get(f"{web_node.url}/ui/")
    wait_for(browser, "redirect to sign-in", lambda d: "/ui/login" in d.current_url)
    save_screenshot(browser, screenshots, "login")
    browser.find_element(By.ID, "login-username").send_keys("alice")
    browser.find_element(By.ID, "login-password").send_keys("not her password")
    browser.find_element(By.ID, "login-submit").click()
    wait_for(
        browser, "login error", lambda d: d.find_elements(By.CSS_SELECTOR, by_testid("login-error"))
    )
    assert "/ui/login" in browser.current_url

    log_in(browser, web_node, "alice")
    wait_for(
        browser,
        "status screen",
        lambda d: d.find_elements(By.CSS_SELECTOR, by_testid("status-listener")),
    )
    assert text_of("whoami")(browser) == "alice (operator)"
    assert "AI_NODE" in text_of("status-listener")(browser)
    models = {
        e.get_attribute("data-model")
        for e in browser.find_elements(By.CSS_SELECTOR, by_testid("model-row"))
    }
    assert MODEL in models
    assert text_of(f"queue-{MODEL}")(browser) == "0"
    assert text_of("disk-free")(browser)
    save_screenshot(browser, screenshots, "status")


def test_a_sent_study_reaches_delivered_on_its_timeline_without_a_reload(
    browser: WebDriver, web_node: WebNode, screenshots: Path
) -> None:
    log_in(browser, web_node, "alice")
    uid = chest_ct(web_node)
    started = time.monotonic()
    browser.get(f"{web_node.url}/ui/studies/{uid}")
    wait_for(browser, "timeline", text_of("timeline-state"))
    first = text_of("timeline-state")(browser)
    assert first != "delivered", "delivered before its page first showed: nothing left to watch"
    mark_page(browser)
    wait_text(browser, "timeline-state", "delivered", PIPELINE_S)
    assert page_kept(browser), "the timeline page was reloaded instead of refreshed in place"
    seconds = time.monotonic() - started
    print(f"timeline: {first} -> delivered in {seconds:.1f} s without a reload")
    job = current_job(browser)
    assert text_of(f"job-{job}-state")(browser) == "done"
    assert text_of(f"job-{job}-revision")(browser) == "revision 0"
    for stage in ("received", "complete", "routed", "inferred", "encoded", "delivered"):
        assert "reached" in (find(browser, f"stage-{stage}").get_attribute("class") or "")
    assert text_of("patient-name")(browser) == CANARY_PATIENT_NAME  # an operator sees them
    assert len(web_node.pacs.received()) >= 2  # SEG and SR at the PACS
    save_screenshot(browser, screenshots, "timeline")

    browser.get(f"{web_node.url}/ui/studies")
    wait_for(
        browser,
        "study row",
        lambda d: d.find_elements(By.CSS_SELECTOR, by_testid(f"study-link-{uid}")),
    )
    assert CANARY_PATIENT_ID in text_of("patient-id")(browser)
    save_screenshot(browser, screenshots, "studies")


def test_the_result_preview_is_a_picture(
    browser: WebDriver, web_node: WebNode, screenshots: Path
) -> None:
    delivered_study(browser, web_node)
    images = browser.find_elements(By.CSS_SELECTOR, "img.preview")
    assert images, "no result preview on the timeline"
    for image in images:
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", image)
        wait_for(
            browser,
            f"preview {image.get_attribute('src')} loaded",
            loaded(image),
            30,
        )
        width = browser.execute_script("return arguments[0].naturalWidth;", image)
        assert isinstance(width, int) and width > 0, image.get_attribute("src")
    seg = images[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", seg)
    (screenshots / "preview.png").write_bytes(seg.screenshot_as_png)
    save_screenshot(browser, screenshots, "timeline-results")


def test_running_a_job_again_shows_revision_1_delivered(
    browser: WebDriver, web_node: WebNode, screenshots: Path
) -> None:
    delivered_study(browser, web_node)
    job = current_job(browser)
    before = len(web_node.pacs.received())
    stable(lambda: find(browser, f"rerun-{job}").click())
    said = flash(browser).text
    found = re.search(r"as job (\d+)", said)
    assert found, said
    new = int(found.group(1))
    mark_page(browser)
    wait_text(browser, f"job-{new}-revision", "revision 1", PIPELINE_S)
    wait_text(browser, f"job-{new}-state", "done", PIPELINE_S)
    wait_text(browser, "timeline-state", "delivered", PIPELINE_S)
    assert page_kept(browser)
    assert text_of(f"job-{job}-state")(browser) == "superseded"
    history = text_of("event-history")(browser)
    assert "rerun by alice" in history, history
    wait_for(
        browser, "revision at the PACS", lambda d: len(web_node.pacs.received()) >= before + 2, 30
    )
    save_screenshot(browser, screenshots, "timeline-revision")


def _delivery_states(driver: WebDriver, job: int, destination: str) -> list[str]:
    """States of the deliveries of ``job``'s results to ``destination`` (timeline page)."""
    css = f'[data-testid^="delivery-"][data-testid$="-{destination}"]'

    def read() -> list[str]:
        article = driver.find_element(By.ID, f"job-{job}")
        return [e.text.strip() for e in article.find_elements(By.CSS_SELECTOR, css)]

    return stable(read)


def test_a_failed_delivery_is_retried_from_the_failures_screen(
    browser: WebDriver, web_node: WebNode, screenshots: Path
) -> None:
    uid = delivered_study(browser, web_node)
    job = current_job(browser)
    choice = Select(find(browser, f"resend-job-{job}-destination"))
    [pacs] = [
        o.get_attribute("value") or ""
        for o in choice.options
        if (o.get_attribute("value") or "").startswith("PACS")
    ]
    choice.select_by_value(pacs)

    web_node.pacs.stop()  # the PACS is down: every attempt is refused
    stable(lambda: find(browser, f"resend-job-{job}").click())
    assert "error" not in (flash(browser).get_attribute("class") or ""), flash(browser).text
    wait_text(browser, "timeline-state", "failed", DELIVERY_S)
    assert set(_delivery_states(browser, job, pacs)) == {"failed"}

    browser.get(f"{web_node.url}/ui/failures")

    def delivery_groups() -> list[str]:
        groups = browser.find_elements(By.CSS_SELECTOR, by_testid("failure-group"))
        return [g.text for g in groups if g.get_attribute("data-kind") == "deliveries"]

    deliveries = stable(delivery_groups)
    assert len(deliveries) == 1, deliveries
    assert pacs in deliveries[0]
    save_screenshot(browser, screenshots, "failures")

    before = len(web_node.pacs.received())
    web_node.pacs.start()  # back on the same port

    def retry_the_group() -> None:
        groups = browser.find_elements(By.CSS_SELECTOR, by_testid("failure-group"))
        [group] = [g for g in groups if g.get_attribute("data-kind") == "deliveries"]
        group.find_element(By.CSS_SELECTOR, '[data-testid^="retry-group-"]').click()

    stable(retry_the_group)
    message = flash(browser)
    assert "error" not in (message.get_attribute("class") or ""), message.text
    mark_page(browser)
    wait_for(
        browser,
        "no failures left",
        lambda d: d.find_elements(By.CSS_SELECTOR, by_testid("no-failures")),
        DELIVERY_S,
    )
    assert page_kept(browser)
    browser.get(f"{web_node.url}/ui/studies/{uid}")
    wait_text(browser, "timeline-state", "delivered", DELIVERY_S)
    assert set(_delivery_states(browser, job, pacs)) == {"delivered"}
    assert len(web_node.pacs.received()) >= before + 2


def test_a_viewer_sees_no_patient_data(
    browser: WebDriver, web_node: WebNode, screenshots: Path
) -> None:
    uid = chest_ct(web_node)
    log_in(browser, web_node, "bob")
    assert text_of("whoami")(browser) == "bob (viewer)"
    browser.get(f"{web_node.url}/ui/studies")
    wait_for(
        browser,
        "study row",
        lambda d: d.find_elements(By.CSS_SELECTOR, by_testid(f"study-link-{uid}")),
    )
    pages = {"studies": browser.page_source}
    browser.get(f"{web_node.url}/ui/studies/{uid}")
    wait_for(browser, "timeline", text_of("timeline-state"))
    pages["timeline"] = browser.page_source
    for name, source in pages.items():
        assert phi_canaries_in(source) == [], f"patient data on the viewer's {name} page"
    assert not browser.find_elements(By.CSS_SELECTOR, by_testid("patient-name"))
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid^="rerun-"]')  # no actions
    save_screenshot(browser, screenshots, "timeline-viewer")


def test_the_other_screens(browser: WebDriver, web_node: WebNode, screenshots: Path) -> None:
    """Destinations (with a C-ECHO), a destination, rules and models, associations, and
    the audit trail (admin) each render what the node has done."""
    chest_ct(web_node)
    log_in(browser, web_node, "ada")
    browser.get(f"{web_node.url}/ui/destinations")
    rows = browser.find_elements(By.CSS_SELECTOR, by_testid("destination-row"))
    [pacs] = [
        r.get_attribute("data-destination") or ""
        for r in rows
        if (r.get_attribute("data-destination") or "").startswith("PACS")
    ]
    stable(lambda: find(browser, f"echo-{pacs}").click())
    message = flash(browser)
    assert "error" not in (message.get_attribute("class") or ""), message.text
    save_screenshot(browser, screenshots, "destinations")

    stable(lambda: find(browser, f"destination-link-{pacs}").click())
    wait_text(browser, "destination-name", pacs)
    assert browser.find_elements(By.CSS_SELECTOR, by_testid("attempt-row"))
    save_screenshot(browser, screenshots, "destination")

    browser.get(f"{web_node.url}/ui/rules")
    assert "chest-ct-lungs" in text_of("rules-text")(browser)
    save_screenshot(browser, screenshots, "rules")

    browser.get(f"{web_node.url}/ui/associations")
    wait_for(  # the study's association; the list refreshes itself
        browser,
        "a completed association from PACS",
        lambda d: any(
            "PACS" in text and "completed" in text
            for text in stable(
                lambda: [
                    r.text for r in d.find_elements(By.CSS_SELECTOR, by_testid("association-row"))
                ]
            )
        ),
    )
    save_screenshot(browser, screenshots, "associations")

    browser.get(f"{web_node.url}/ui/audit")
    rows = browser.find_elements(By.CSS_SELECTOR, by_testid("audit-row"))
    assert any("ada" in r.text for r in rows), [r.text for r in rows[:5]]  # her C-ECHO
    save_screenshot(browser, screenshots, "audit")
