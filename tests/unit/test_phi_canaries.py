"""The PHI canary check itself: generated data carries the canaries, and they are found."""

from __future__ import annotations

import logging

import pytest

from dicom_ai_node.testing.series import (
    CANARY_BIRTH_DATE,
    CANARY_PATIENT_ID,
    CANARY_PATIENT_NAME,
    make_ct_series,
    phi_canaries_in,
)

from ..conftest import _CanaryWatch


def test_generated_series_carry_the_canaries() -> None:
    _, [ds] = make_ct_series(1, 8, 8, seed=1)
    assert str(ds.PatientName) == CANARY_PATIENT_NAME
    assert (ds.PatientID, ds.PatientBirthDate) == (CANARY_PATIENT_ID, CANARY_BIRTH_DATE)


@pytest.mark.parametrize(
    "text",
    [
        f"patient {CANARY_PATIENT_NAME}",
        "name: canaryqz, phixw",  # formatted, lower case
        "Phixw Canaryqz",
        f"id={CANARY_PATIENT_ID}",
        "born 1902-03-04",
    ],
)
def test_every_form_of_a_canary_is_found(text: str) -> None:
    assert phi_canaries_in(text)


def test_uids_and_reasons_are_not_canaries() -> None:
    assert not phi_canaries_in("stored 1.2.826.0.1.3680043.10.1453.1 from CT_SCANNER at 20260101")


def test_the_log_watch_catches_a_leak_at_debug_level() -> None:
    watch = _CanaryWatch()
    log = logging.getLogger("dicom_ai_node.test_phi")
    log.addHandler(watch)
    log.setLevel(logging.DEBUG)
    log.propagate = False  # this leak is on purpose: keep it from the suite's own watch
    try:
        log.debug("looked at %s", CANARY_PATIENT_ID)
        try:
            raise ValueError(f"bad name {CANARY_PATIENT_NAME}")
        except ValueError:
            log.exception("failed")  # the exception text counts too
    finally:
        log.removeHandler(watch)
        log.propagate = True
    assert len(watch.leaks) == 2
