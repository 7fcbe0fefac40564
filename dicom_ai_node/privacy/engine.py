"""Privacy: the Basic Application Level Confidentiality Profile applied to one instance.

PS3.15 E.1.1 with the Retain UIDs (E.3.9) and Retain Device Identity (E.3.8) Options;
the actions come from Table E.1-1 (:mod:`.table`). How each action is carried out:

- **X** removes; **K** keeps (a sequence is kept with its items de-identified in turn).
- **Z** empties the value (a sequence: no items).
- **D** writes a dummy of the VR (:data:`DUMMIES`: ``ANONYMIZED``, ``19000101``,
  ``000000``, ``0``, zero bytes); a UI gets a replacement UID. A sequence keeps its
  items, de-identified, with every remaining text value (not CS) a dummy; Content
  Sequence (0040,A730) keeps its content items' codes and structure, its Date, Time,
  DateTime, Person Name (own rows, D) and UIDs (U) replaced and each Text Value
  (0040,A160), which the table does not list, a dummy.
- **C** occurs only under options the node does not offer; it is carried out as D.
- **U** replaces each UID with :meth:`~.secret.Pseudonyms.uid` of it, recorded in the
  mapping, so the same UID gets the same replacement in every instance and every re-send.
- The combined codes say "X unless Z or D is needed for IOD conformance". Without the
  IOD's attribute types at hand the engine keeps what the input shows: an attribute sent
  empty stays empty (it cannot be Type 1), one with a value gets a dummy (Z/D, X/D,
  X/Z/D) or is emptied (X/Z); X/Z/U* sequences keep their items with the UIDs replaced.
  The output never holds the original value and stays as conformant as the input.

Beyond the table (node policy, stricter): every private attribute is removed (the Retain
Safe Private Option, E.3.10, is not supported); whole overlay groups 60xx go, not only
their data and comments, since a plane without its data is invalid; group lengths go
(their values change); a PN the table does not list is emptied; a DA or DT it does not
list gets a dummy (version stamps of coding resources excepted); a UI it does not list
whose value is a UID replaced elsewhere in the instance or study gets the same
replacement. Patient's Name and Patient ID get HMAC pseudonyms instead of Z, so every
series of one patient stays linked. Burned-in annotation (0028,0301 YES) is refused: the
Clean Pixel Data Option (E.3.1) is not supported, and pixel data is never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from ..errors import PrivacyError
from .mapping import Identifier, StudyMapping
from .markers import EQUIPMENT_KEYWORDS, PATIENT_STUDY_KEYWORDS, add_markers
from .table import Action, ActionTable, load_table

__all__ = ["DUMMIES", "deidentify"]

#: Dummy values by VR for the D action (non-zero length, consistent with the VR).
DUMMIES: dict[str, Any] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UR": "urn:anonymized",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "AT": 0,
}
#: Text VRs a dummy replaces inside a sequence whose action is D (CS, coded terms, stays).
_TEXT_VRS = frozenset({"AE", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"})
#: DA/DT attributes the table does not list that are version stamps, not events.
_VERSION_STAMPS = frozenset(
    Tag(t)  # Context Group (Local) Version, Template (Local) Version
    for t in (0x00080106, 0x00080107, 0x0040DB06, 0x0040DB07)
)
_CONTENT_SEQUENCE = Tag("ContentSequence")
_TEXT_VALUE = Tag("TextValue")
_PATIENT_ID = Tag("PatientID")
_PATIENT_NAME = Tag("PatientName")

#: Identifiers recorded in the mapping, with what replaced them.
_RECORDED = (
    "PatientID",
    "PatientName",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


class _Walk:
    """One pass over one instance: the table, the options, the mapping and the patient."""

    def __init__(
        self, table: ActionTable, mapping: StudyMapping, retain_uids: bool, retain_device: bool
    ) -> None:
        self.table = table
        self.mapping = mapping
        self.retain_uids = retain_uids
        self.retain_device = retain_device
        self.patient_key: tuple[str, str] = ("study", mapping.study_instance_uid)
        self.uid_values: set[str] = set()

    # -- what to do with one element ---------------------------------------------------

    def action(self, tag: BaseTag) -> Action | None:
        """The table's action for a tag; None if not listed (patterns: :func:`_drop_outright`)."""
        row = self.table.row(int(tag))
        if row is None:
            return None
        return row.action(retain_uids=self.retain_uids, retain_device=self.retain_device)

    def collect_uids(self, ds: Dataset) -> None:
        """Note every value of an attribute whose action is U, at any depth."""
        for elem in _elements(ds):
            if elem.VR == "UI" and self.action(elem.tag) is Action.UID:
                self.uid_values.update(_values(elem))

    # -- the pass ----------------------------------------------------------------------

    def dataset(self, ds: Dataset) -> None:
        """De-identify ``ds`` in place (a copy made by :func:`deidentify`)."""
        for tag in list(ds.keys()):
            if _drop_outright(tag):
                del ds[tag]
                continue
            elem = ds[tag]
            action = self.action(tag)
            if action is None:
                self.unlisted(ds, elem)
            else:
                self.apply(ds, elem, action)

    def unlisted(self, ds: Dataset, elem: DataElement) -> None:
        """Node policy for attributes Table E.1-1 does not name (see the module text)."""
        if elem.VR == "SQ":
            self.items(elem)
        elif elem.VR == "PN" and not elem.is_empty:
            ds[elem.tag] = _empty(elem)
        elif elem.VR in ("DA", "DT") and not elem.is_empty and elem.tag not in _VERSION_STAMPS:
            ds[elem.tag] = DataElement(elem.tag, elem.VR, DUMMIES[elem.VR])
        elif elem.VR == "UI" and not self.retain_uids:
            known = self.mapping.uids
            if any(v in self.uid_values or v in known for v in _values(elem)):
                self.replace_uids(elem)

    def apply(self, ds: Dataset, elem: DataElement, action: Action) -> None:
        """Carry out one table action on ``elem`` (PS3.15 Table E.1-1a)."""
        empty = elem.is_empty
        if action is Action.KEEP:
            if elem.VR == "SQ":
                self.items(elem)
        elif action is Action.REMOVE or (action is Action.REMOVE_OR_DUMMY and empty):
            del ds[elem.tag]
        elif action in (Action.ZERO, Action.REMOVE_OR_ZERO) or (empty and action is not Action.UID):
            self.zero(ds, elem)
        elif action is Action.UID:
            self.replace_uids(elem)
        elif action is Action.REMOVE_ZERO_OR_UIDS and elem.VR == "SQ":
            self.items(elem)  # a non-empty sequence of references: keep, UIDs replaced
        elif action is Action.REMOVE_ZERO_OR_UIDS:
            self.zero(ds, elem)
        else:  # D, C, Z/D, X/D, X/Z/D with a value
            self.dummy(ds, elem)

    def zero(self, ds: Dataset, elem: DataElement) -> None:
        """Z: an empty value; Patient ID and Name get their pseudonyms instead."""
        if elem.tag == _PATIENT_ID and not elem.is_empty:
            ds[elem.tag] = DataElement(elem.tag, "LO", self.pseudonym_id())
        elif elem.tag == _PATIENT_NAME:
            ds[elem.tag] = DataElement(elem.tag, "PN", self.pseudonym_name())
        else:
            ds[elem.tag] = _empty(elem)

    def dummy(self, ds: Dataset, elem: DataElement) -> None:
        """D: a dummy consistent with the VR; a UID its replacement; a sequence its items."""
        if elem.VR == "SQ":
            self.items(elem)
            if elem.tag == _CONTENT_SEQUENCE:
                for item in elem.value:
                    if _TEXT_VALUE in item:
                        item[_TEXT_VALUE].value = DUMMIES["UT"]
            else:
                for item in elem.value:
                    _dummy_text(item)
        elif elem.VR == "UI":
            self.replace_uids(elem)
        elif elem.VR in DUMMIES:
            ds[elem.tag] = DataElement(elem.tag, elem.VR, DUMMIES[elem.VR])
        else:  # OB, OW, UN, ... : zero bytes of an even length
            ds[elem.tag] = DataElement(elem.tag, elem.VR, b"\x00\x00")

    def items(self, elem: DataElement) -> None:
        """De-identify every item of a sequence (K: 'cleaned for sequences')."""
        for item in elem.value:
            self.dataset(item)

    def replace_uids(self, elem: DataElement) -> None:
        """U: each UID value replaced through the mapping (kept with Retain UIDs)."""
        if self.retain_uids or elem.is_empty:
            return
        keyword = elem.keyword or str(elem.tag)
        new = [self.mapping.replace_uid(str(v), keyword) for v in _values(elem)]
        elem.value = new if elem.VM > 1 else new[0]

    def pseudonym_id(self) -> str:
        return self.mapping.pseudonyms.patient_id(self.patient_key)

    def pseudonym_name(self) -> str:
        return self.mapping.pseudonyms.patient_name(self.patient_key)


def _drop_outright(tag: BaseTag) -> bool:
    """Private attributes, curve groups 50xx, overlay groups 60xx and group lengths."""
    group, element = tag.group, tag.element
    return (
        tag.is_private
        or 0x5000 <= group <= 0x50FF
        or 0x6000 <= group <= 0x60FF
        or (element == 0 and group != 0x0002)
    )


def _elements(ds: Dataset) -> Iterator[DataElement]:
    """Every public element of ``ds`` and its sequences, depth first."""
    for tag in list(ds.keys()):
        if _drop_outright(tag):
            continue
        elem = ds[tag]
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _elements(item)


def _values(elem: DataElement) -> list[str]:
    if elem.is_empty:
        return []
    return [str(v) for v in elem.value] if elem.VM > 1 else [str(elem.value)]


def _empty(elem: DataElement) -> DataElement:
    """A zero-length element of the same tag and VR (a sequence without items)."""
    return DataElement(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else elem.empty_value)


def _dummy_text(item: Dataset) -> None:
    """Every text value left in an item of a D sequence becomes a dummy (CS stays)."""
    for elem in item:
        if elem.VR == "SQ":
            for sub in elem.value:
                _dummy_text(sub)
        elif elem.VR in _TEXT_VRS and not elem.is_empty:
            elem.value = DUMMIES[elem.VR]


def _kept(original: Dataset, keywords: tuple[str, ...]) -> dict[str, Any]:
    kept = Dataset()
    for keyword in keywords:
        if keyword in original:
            kept[keyword] = copy.deepcopy(original[keyword])
    return kept.to_json_dict()


def _record(mapping: StudyMapping, original: Dataset, output: Dataset, first: bool) -> None:
    """Keep the original's patient, study and equipment attributes and what replaced what."""
    if first:
        mapping.original_attributes = _kept(original, PATIENT_STUDY_KEYWORDS)
        mapping.original_equipment = _kept(original, EQUIPMENT_KEYWORDS)
    for keyword in _RECORDED:
        if keyword in original and keyword not in mapping.identifiers:
            new = output.get(keyword, "")
            mapping.identifiers[keyword] = Identifier(str(original[keyword].value or ""), str(new))


def deidentify(
    ds: Dataset, *, retain_uids: bool, retain_device: bool, mapping: StudyMapping
) -> Dataset:
    """De-identify one instance with the Basic Application Level Confidentiality Profile.

    PS3.15 E.1.1 and Table E.1-1, with the Retain UIDs (E.3.9) and Retain Device Identity
    (E.3.8) Options; what each action does and where the node goes further is described
    in this module's text.

    Parameters
    ----------
    ds:
        The instance; never modified.
    retain_uids:
        Keep UIDs (E.3.9) instead of replacing them.
    retain_device:
        Keep the attributes that identify the device (E.3.8).
    mapping:
        The study's mapping; records every replacement, and the original patient/study
        attributes the first time. All instances of one study share one mapping.

    Returns
    -------
    pydicom.dataset.Dataset
        A de-identified copy (with file meta, if ``ds`` had it), marked with Patient
        Identity Removed (0012,0062) YES and the CID 7050 codes of the options used.

    Raises
    ------
    PrivacyError
        If the instance has burned-in annotation or no conformant Study Instance UID,
        belongs to another study than the mapping, or the options differ from those the
        study was started with.
    """
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise PrivacyError(
            "the pixel data has burned-in annotation; the Clean Pixel Data Option is not "
            "supported, so this instance cannot be de-identified"
        )
    first = mapping.bind(
        str(ds.get("StudyInstanceUID", "")), retain_uids=retain_uids, retain_device=retain_device
    )
    out = copy.deepcopy(ds)
    walk = _Walk(load_table(), mapping, retain_uids, retain_device)
    walk.patient_key = mapping.pseudonyms.patient_key(
        str(ds.get("PatientID", "") or ""),
        str(ds.get("IssuerOfPatientID", "") or ""),
        str(ds.get("PatientName", "") or ""),
        mapping.study_instance_uid,
    )
    walk.collect_uids(out)
    walk.dataset(out)
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        walk.dataset(meta)
        if "SOPInstanceUID" in out:
            meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    add_markers(out, retain_uids, retain_device)
    _record(mapping, ds, out, first)
    return out
