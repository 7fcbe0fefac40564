"""The conformance statement (docs/conformance.md) says what the code does, no more, no less."""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicom_ai_node.domain import ModelOutput
from dicom_ai_node.encode import encode_results
from dicom_ai_node.receive.scp import VERIFICATION, storage_sop_classes
from dicom_ai_node.send import scu
from dicom_ai_node.testing.series import make_ct_series
from scripts.conformance import facts as facts_module
from scripts.conformance import render
from scripts.conformance.facts import CREATED_CHARACTER_SET, CREATED_TRANSFER_SYNTAX, Facts
from scripts.conformance.iods import COMMON, IODS
from tests.unit.encode_cases import ALGORITHM, LABELS, volumes

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"
FIX = "make conformance  (python -m scripts.conformance > docs/conformance.md)"


def mismatch(expected: str, actual: str) -> str:
    """A unified diff from the document to what the code says, and how to fix it."""
    diff = difflib.unified_diff(
        actual.splitlines(), expected.splitlines(), "docs/conformance.md", "generated", n=1
    )
    return f"docs/conformance.md is out of date; run: {FIX}\n" + "\n".join(list(diff)[:80])


@pytest.fixture(scope="module")
def facts() -> Facts:
    return facts_module.gather()


@pytest.fixture(scope="module")
def generated(facts: Facts) -> str:
    return render(facts)


def test_the_document_is_what_the_code_generates(generated: str) -> None:
    written = DOCUMENT.read_text("utf-8")
    assert written == generated, mismatch(generated, written)


def test_every_sop_class_the_receiver_accepts_is_in_the_document(generated: str) -> None:
    accepted = [VERIFICATION, *storage_sop_classes()]
    assert len(accepted) > 200
    missing = [uid for uid in accepted if f"`{uid}`" not in generated]
    assert missing == []


def test_storage_commitment_is_not_among_the_storage_classes_accepted() -> None:
    """An N-ACTION service the node does not provide (PS3.4 J): no context for it."""
    accepted = storage_sop_classes()
    assert "1.2.840.10008.1.20.1" not in accepted and "1.2.840.10008.1.20.2" not in accepted
    assert "1.2.840.10008.5.1.4.1.1.2" in accepted  # CT Image Storage


def test_the_facts_are_the_listeners_own_contexts(facts: Facts) -> None:
    """The statement reads the SCP's AE: its abstract syntaxes are the receiver's table."""
    assert {cx.abstract_syntax for cx in facts.accepted} == {
        VERIFICATION,
        *storage_sop_classes(),
    }
    assert all(cx.transfer_syntaxes for cx in facts.accepted)
    # every result SOP class is proposed, in the syntax the encoders write
    proposed = {cx.abstract_syntax: cx.transfer_syntaxes for cx in facts.proposed}
    assert all(
        proposed[u][0] == CREATED_TRANSFER_SYNTAX
        for k in facts.result_kinds
        for u in k.sop_class_uids
    )


def test_a_changed_table_makes_the_comparison_fail(
    facts: Facts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A made-up change in a code table (the listener's maximum PDU default, the SOP
    classes accepted) gives another document, so the first test would fail."""
    written = DOCUMENT.read_text("utf-8")
    fewer = dataclasses.replace(facts, accepted=facts.accepted[:-1])
    assert render(fewer) != written
    assert "docs/conformance.md is out of date; run: make conformance" in mismatch(
        render(fewer), written
    )
    monkeypatch.setattr(scu, "DEFAULT_MAX_PDU", 4096)
    changed = render(facts_module.gather())
    assert changed != written
    assert "4096 bytes when it initiates one" in changed


def test_a_status_without_a_meaning_stops_the_generator(facts: Facts) -> None:
    odd = dataclasses.replace(facts, statuses=(*facts.statuses, ("NEW_STATUS", 0xA7FF)))
    with pytest.raises(KeyError, match="NEW_STATUS"):
        render(odd)


@pytest.fixture(scope="module")
def created() -> list[Dataset]:
    """A SEG and SRs as the encoders make them."""
    phantom, source = make_ct_series(12, 64, 64, spacing_mm=(5.0, 2.8, 2.8))
    assert np.any(phantom.labels)
    output = ModelOutput(
        labels=LABELS,
        label_map=phantom.labels,
        measurements=volumes(phantom.labels, phantom.spacing_mm),
    )
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    return encode_results(source, output, ALGORITHM, "job-1", content_datetime=when)


def test_created_objects_carry_what_annex_a1_promises(created: list[Dataset]) -> None:
    """SEG and SR: the common attributes, the kind's own, the syntax and character set."""
    kinds = {"SEG": "SEG", "SR": "SR"}
    seen = set()
    for ds in created:
        kind = kinds[str(ds.Modality)]
        seen.add(kind)
        keywords = [k for k, _ in COMMON] + [k for k, _ in IODS[kind].attributes]
        assert [k for k in keywords if k not in ds] == [], kind
        assert ds.file_meta.TransferSyntaxUID == CREATED_TRANSFER_SYNTAX
        assert ds.SpecificCharacterSet == CREATED_CHARACTER_SET
    assert seen == {"SEG", "SR"}
