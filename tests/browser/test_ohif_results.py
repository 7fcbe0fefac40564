"""OHIF Viewer 3.13.2, served from Orthanc over DICOMweb, shows the SC key images (issue 17).

A CT phantom with a label map goes through the node's encoders (``encode_profiles``:
SC key images and GSPS), and the CT, the key images and the presentation state are
stored in a real Orthanc by C-STORE. OHIF's own prebuilt ``dist`` (npm ``@ohif/app``
3.13.2) is served by :class:`~tests.browser.ohif.OhifServer` with Orthanc's DICOMweb
proxied on the same origin, and Debian's chromium opens the study by URL.

Checked in the browser:

- the proxy answers GET and refuses POST (405): the viewer only reads;
- the study browser lists exactly the CT, the key image series (modality OT, the SC's)
  and the presentation state's series (modality PR), by their descriptions;
- the CT in the viewport holds no pixel of the outline colour; once the key image series
  is loaded (double click on its thumbnail), the viewport's canvas holds the burned-in
  outline in the label's colour: OHIF fetched the SC by WADO-RS and drew its RGB pixels;
- the PR entry carries OHIF's own display-set message "SOP Class UID is not supported.".

What OHIF 3.13.2 does with the GSPS: it lists it and says it does not support it. Its
bundle registers no SOP class handler for presentation states (the handlers are stack,
SEG, SR, SR 3D, RT, PMAP, PDF, video, ECG, microscopy, chart and the "not supported"
handler; the Grayscale Softcopy Presentation State UID appears only in its SOP class
dictionary), and OHIF's issue #4106 ("Support for Presentation States and GSPS
Export") is open. So the test asserts that message, not annotations: when an OHIF
release applies presentation states, it fails and is to be rewritten for what that
release draws. The GSPS's graphic annotations are read by dcmjs 0.52 (OHIF 3.13's DICOM
parser) in tests/interop/test_gsps_dcmjs.py. Screenshots go to ``ohif/`` in the
screenshots folder (not docs material: update_screenshots.sh copies only the top level).
"""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

import numpy as np
import pytest
from pydicom.dataset import Dataset
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from dicom_ai_node.domain import AlgorithmInfo, Code, Measurement, ModelOutput, OutputLabel
from dicom_ai_node.encode import device_uid, encode_profiles
from dicom_ai_node.infer.findings.measure import ML, VOLUME
from dicom_ai_node.testing.series import make_ct_series

from ..orthanc import OrthancFactory
from .conftest import save_screenshot
from .ohif import OhifServer, require_ohif

pytestmark = [pytest.mark.integration, pytest.mark.interop, pytest.mark.slow]

T = TypeVar("T")
#: The outline's colour: pure magenta never appears in a grayscale CT.
OUTLINE_RGB = (255, 0, 255)
#: How far (per channel) a canvas pixel may be from OUTLINE_RGB and still count.
COLOUR_TOLERANCE = 40
ANATOMY = Code("123037004", "SCT", "Anatomical Structure")
LUNG = OutputLabel(1, "Right lung", ANATOMY, Code("3341006", "SCT", "Right lung"), OUTLINE_RGB)
ALGORITHM = AlgorithmInfo(
    name="lungs",
    version="1.0.0",
    family=Code("123110", "DCM", "Artificial Intelligence"),
    device_uid=device_uid("lungs", "1.0.0"),
)
WHEN = dt.datetime(2026, 12, 8, 10, 30, 0)
#: Seconds OHIF may take to list the series, and to draw a series or show a message.
LOAD_S = 40
DRAW_S = 25
#: Pixels of the outline colour a drawn key image shows at least (its outline runs
#: round a lung, hundreds of source pixels, scaled up about 4x in the viewport).
MIN_OUTLINE_PIXELS = 500
#: Non-black pixels of a viewport that shows an image (about 955 x 842 in all).
MIN_LIT_PIXELS = 100_000
#: What OHIF 3.13.2 says about a display set of a SOP class no extension handles
#: (DisplaySetMessage UNSUPPORTED_SOP_CLASS_UID), shown in the study browser's tooltip.
GSPS_MESSAGE = "SOP Class UID is not supported."
TOOLTIP_CSS = '[role="tooltip"], [data-radix-popper-content-wrapper]'
TOOLTIP = 'starts-with(@id, "display-set-tooltip-")'

#: OHIF's onboarding tour (a pop-up over the viewport) counts as shown.
SKIP_TOUR_JS = "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));"
#: (modality, description) of each thumbnail in the study browser.
SERIES_JS = """
const out = [];
for (const d of document.querySelectorAll('[data-cy="series-description-label"]')) {
  let t = d;
  while (t && !t.querySelector('[data-cy="series-modality-label"]')) t = t.parentElement;
  const m = t ? t.querySelector('[data-cy="series-modality-label"]') : null;
  out.push([m ? m.innerText.trim() : '', d.innerText.trim()]);
}
return out;
"""
#: Pixels of the first viewport's canvas within ``arguments[1]`` of the RGB
#: ``arguments[0]``, and how many are not black; null while no canvas is there.
COUNT_JS = """
const [rgb, tol] = arguments;
const pane = document.querySelector('[data-cy="viewport-pane"]');
const canvas = pane && pane.querySelector('canvas.cornerstone-canvas, canvas');
if (!canvas || !canvas.width || !canvas.height) return null;
const ctx = canvas.getContext('2d', {willReadFrequently: true});
if (!ctx) return null;
const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
let match = 0, lit = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i] + data[i + 1] + data[i + 2] > 30) lit++;
  if (Math.abs(data[i] - rgb[0]) <= tol && Math.abs(data[i + 1] - rgb[1]) <= tol
      && Math.abs(data[i + 2] - rgb[2]) <= tol) match++;
}
return {match, lit};
"""


class Counts(NamedTuple):
    """Pixels of a viewport's canvas: of the outline colour, and not black."""

    match: int
    lit: int


def _study() -> tuple[list[Dataset], list[Dataset], list[Dataset]]:
    """A CT phantom and the SC key images and GSPS the node's encoders make for it."""
    phantom, source = make_ct_series(12, 192, 192, spacing_mm=(5.0, 2.0, 2.0), seed=7)
    label_map = (phantom.labels == 1).astype(np.uint8)
    output = ModelOutput(
        labels=(LUNG,),
        label_map=label_map,
        measurements=(Measurement(1, VOLUME, float(label_map.sum()) * 0.02, ML),),
    )
    made = encode_profiles(
        {"SC", "GSPS"},
        source,
        output,
        ALGORITHM,
        "job/ohif",
        series_number=700,
        content_datetime=WHEN,
        pixels=lambda i: source[i].pixel_array,
        reports=[],
        card_summary="lungs 1.0.0. Research only.",
    )
    sc = [ds for ds in made if ds.Modality != "PR"]
    gsps = [ds for ds in made if ds.Modality == "PR"]
    assert sc and gsps, [ds.Modality for ds in made]
    return source, sc, gsps


def _wait(
    driver: WebDriver,
    what: str,
    check: Callable[[WebDriver], T | None],
    timeout_s: float,
    ohif: OhifServer,
) -> T:
    """Wait (bounded) until ``check`` answers something other than None; a timeout names
    ``what`` and the last requests the page made."""

    def probe(d: WebDriver) -> T | Literal[False]:
        found = check(d)
        return False if found is None else found

    wait = WebDriverWait(
        driver,
        timeout_s,
        poll_frequency=0.25,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    try:
        return wait.until(probe)
    except TimeoutException as exc:
        raise AssertionError(
            f"{what}: not within {timeout_s} s; last requests:\n" + "\n".join(ohif.requests[-30:])
        ) from exc


def _series_labels(driver: WebDriver) -> list[tuple[str, str]] | None:
    """(modality, description) of each thumbnail in OHIF's study browser; None for none."""
    found = driver.execute_script(SERIES_JS)
    return [(str(m), str(d)) for m, d in found] or None


def _canvas(driver: WebDriver) -> Counts | None:
    """What the first viewport's canvas shows (see ``COUNT_JS``); None while it has none."""
    answer = driver.execute_script(COUNT_JS, list(OUTLINE_RGB), COLOUR_TOLERANCE)
    return None if answer is None else Counts(int(answer["match"]), int(answer["lit"]))


def _status(url: str, method: str) -> int:
    """The HTTP status of one bodiless request."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _thumbnail(driver: WebDriver, description: str) -> WebElement:
    """The study browser's entry of the series with this description."""
    return driver.find_element(
        By.XPATH, f'//*[@data-cy="series-description-label" and normalize-space()="{description}"]'
    )


def test_ohif_shows_the_key_images_and_lists_the_presentation_state_as_unsupported(
    orthanc_factory: OrthancFactory, browser: WebDriver, screenshots: Path
) -> None:
    require_ohif()  # before Orthanc starts: a skip costs nothing
    shots = screenshots / "ohif"  # not docs material: update_screenshots.sh skips folders
    shots.mkdir(exist_ok=True)
    source, sc, gsps = _study()
    pacs = orthanc_factory.start()
    pacs.send([*source, *sc, *gsps])
    study = str(source[0].StudyInstanceUID)
    ct_description, sc_description = str(source[0].SeriesDescription), str(sc[0].SeriesDescription)
    pr_description = str(gsps[0].SeriesDescription)
    with OhifServer(pacs.http_port) as ohif:
        assert _status(f"{ohif.url}/dicom-web/studies", "POST") == 405  # the proxy reads only
        assert _status(f"{ohif.url}/dicom-web/studies/{study}/series", "GET") == 200
        browser.get(f"{ohif.url}/app-config.js")  # the origin, to set its local storage
        browser.execute_script(SKIP_TOUR_JS)
        browser.get(f"{ohif.url}/viewer?StudyInstanceUIDs={study}")

        def three_series(d: WebDriver) -> list[tuple[str, str]] | None:
            found = _series_labels(d)
            return found if found and len(found) >= 3 else None

        labels = _wait(browser, "the study browser's three series", three_series, LOAD_S, ohif)
        # SC's Modality is OT ("other"): OHIF labels the thumbnail with it
        assert sorted(labels) == sorted(
            [("CT", ct_description), ("OT", sc_description), ("PR", pr_description)]
        ), labels

        def lit(d: WebDriver) -> Counts | None:
            found = _canvas(d)
            return found if found is not None and found.lit > MIN_LIT_PIXELS else None

        ct = _wait(browser, "the CT drawn in the viewport", lit, DRAW_S, ohif)
        save_screenshot(browser, shots, "ohif-ct")
        assert ct.match == 0, f"the CT shows {ct.match} pixels of the outline colour"

        # (a) the key image: OHIF fetches the SC by WADO-RS and draws its burned-in outline
        ActionChains(browser).double_click(_thumbnail(browser, sc_description)).perform()

        def outlined(d: WebDriver) -> Counts | None:
            found = _canvas(d)
            return found if found is not None and found.match >= MIN_OUTLINE_PIXELS else None

        drawn = _wait(browser, "the key image's outline in the viewport", outlined, DRAW_S, ohif)
        save_screenshot(browser, shots, "ohif-key-image")
        assert drawn.lit > MIN_LIT_PIXELS, drawn

        # (b) the GSPS: listed, with OHIF's own message that it does not support its class
        tip = browser.find_element(
            By.XPATH,
            f'//*[@data-cy="series-description-label" and normalize-space()="{pr_description}"]'
            f"/ancestor::*[.//*[{TOOLTIP}]][1]//*[{TOOLTIP}]",
        )

        def tooltip(d: WebDriver) -> str | None:
            ActionChains(d).move_to_element(tip).perform()  # again each time: hover opens it
            shown = d.find_elements(By.CSS_SELECTOR, TOOLTIP_CSS)
            return next((e.text for e in shown if e.text.strip()), None)

        message = _wait(browser, "the GSPS entry's message", tooltip, DRAW_S, ohif)
        save_screenshot(browser, shots, "ohif-gsps-message")
        assert GSPS_MESSAGE in message, message
