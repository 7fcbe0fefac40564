"""Privacy: the record of one study's original and pseudonymous identifiers.

:func:`~dicom_ai_node.privacy.deidentify` fills a :class:`StudyMapping` as it goes;
:func:`~dicom_ai_node.privacy.reidentify` reads it to put a result made elsewhere back
into the original study. It holds patient data (the original identifiers and the
patient/study module of the original), so its file is written like the instances
themselves: mode 0600 in a 0700 folder, temp file, fsync, rename, fsync folder.

One JSON file per study, named by the pseudonymous Study Instance UID (the UID a result
made elsewhere carries). A table in the index would let the node join it with jobs and
delete it with the study; that belongs with the sender that will use it (none yet).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from ..durable import fsync_dir
from ..errors import PrivacyError
from ..store.files import valid_uid
from .secret import Pseudonyms

__all__ = ["FORMAT_VERSION", "Identifier", "StudyMapping"]

#: Version of the JSON layout written by :meth:`StudyMapping.save`.
FORMAT_VERSION = 1


@dataclass
class Identifier:
    """An identifying value and what replaced it (``""`` when it was emptied)."""

    original: str
    pseudonym: str


@dataclass
class StudyMapping:
    """Original <-> pseudonymous identifiers of one study (PS3.15 E.1.1, re-identification).

    Parameters
    ----------
    secret:
        The node's secret (:func:`~dicom_ai_node.privacy.load_or_create_secret`); it is
        never stored in the mapping or its file.

    Attributes
    ----------
    study_instance_uid:
        The original Study Instance UID; set by the first de-identified instance.
    retain_uids, retain_device:
        The options the study is de-identified with; set by the first instance, a later
        one with other options is refused.
    uids:
        Original UID -> replacement, for every UID replaced (none with Retain UIDs).
    uid_keywords:
        Original UID -> keyword of the attribute it was first seen in
        (``SeriesInstanceUID``, ``SOPInstanceUID``, ``FrameOfReferenceUID``, ...).
    identifiers:
        Keyword -> :class:`Identifier` (PatientID, PatientName, PatientBirthDate,
        AccessionNumber, StudyID, ...), from the first instance.
    original_attributes:
        The patient and study module attributes of the original (DICOM JSON, PS3.18
        F.2), copied back into re-identified results.
    original_equipment:
        The General Equipment attributes of the original (DICOM JSON), put back where a
        result names the source's acquisition equipment.
    """

    secret: bytes = field(repr=False)
    study_instance_uid: str = ""
    retain_uids: bool | None = None
    retain_device: bool | None = None
    uids: dict[str, str] = field(default_factory=dict)
    uid_keywords: dict[str, str] = field(default_factory=dict)
    identifiers: dict[str, Identifier] = field(default_factory=dict)
    original_attributes: dict[str, Any] = field(default_factory=dict, repr=False)
    original_equipment: dict[str, Any] = field(default_factory=dict, repr=False)
    pseudonyms: Pseudonyms = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.pseudonyms = Pseudonyms(self.secret)

    @property
    def pseudonymous_study_uid(self) -> str:
        """The Study Instance UID the de-identified study carries."""
        if not self.study_instance_uid:
            raise PrivacyError("the mapping holds no study yet")
        return self.uids.get(self.study_instance_uid, self.study_instance_uid)

    def bind(self, study_uid: str, *, retain_uids: bool, retain_device: bool) -> bool:
        """Tie the mapping to a study and options; ``True`` the first time.

        Raises
        ------
        PrivacyError
            If the mapping belongs to another study or was used with other options.
        """
        if not self.study_instance_uid:
            if not valid_uid(study_uid):
                raise PrivacyError("the instance has no conformant Study Instance UID")
            self.study_instance_uid = study_uid
            self.retain_uids, self.retain_device = retain_uids, retain_device
            return True
        if study_uid != self.study_instance_uid:
            raise PrivacyError("the instance belongs to another study than the mapping")
        if (retain_uids, retain_device) != (self.retain_uids, self.retain_device):
            raise PrivacyError("a study must be de-identified with the same options throughout")
        return False

    def replace_uid(self, original: str, keyword: str) -> str:
        """The replacement of ``original``, recorded (the same one every time)."""
        new = self.uids.get(original)
        if new is None:
            new = original if self.retain_uids else self.pseudonyms.uid(original)
            self.uids[original] = new
            self.uid_keywords[original] = keyword
        return new

    def originals_by_replacement(self) -> dict[str, str]:
        """Replacement UID -> original UID (for :func:`reidentify`)."""
        return {new: old for old, new in self.uids.items()}

    def original_dataset(self) -> Dataset:
        """The recorded patient and study module attributes as a data set."""
        return Dataset.from_json(self.original_attributes)

    def original_equipment_dataset(self) -> Dataset:
        """The recorded General Equipment attributes as a data set."""
        return Dataset.from_json(self.original_equipment)

    # -- persistence -------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The mapping as JSON-ready data (no secret)."""
        return {
            "format": FORMAT_VERSION,
            "study_instance_uid": self.study_instance_uid,
            "pseudonymous_study_instance_uid": self.pseudonymous_study_uid,
            "retain_uids": self.retain_uids,
            "retain_device": self.retain_device,
            "uids": [
                {"original": old, "replacement": new, "keyword": self.uid_keywords.get(old, "")}
                for old, new in self.uids.items()
            ],
            "identifiers": {
                k: {"original": v.original, "pseudonym": v.pseudonym}
                for k, v in self.identifiers.items()
            },
            "original_attributes": self.original_attributes,
            "original_equipment": self.original_equipment,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], secret: bytes) -> StudyMapping:
        """Rebuild a mapping written by :meth:`to_json`.

        Raises
        ------
        PrivacyError
            If the data is of another format version.
        """
        if data.get("format") != FORMAT_VERSION:
            raise PrivacyError(f"unknown mapping format {data.get('format')!r}")
        return cls(
            secret=secret,
            study_instance_uid=data["study_instance_uid"],
            retain_uids=data["retain_uids"],
            retain_device=data["retain_device"],
            uids={u["original"]: u["replacement"] for u in data["uids"]},
            uid_keywords={u["original"]: u["keyword"] for u in data["uids"]},
            identifiers={
                k: Identifier(v["original"], v["pseudonym"]) for k, v in data["identifiers"].items()
            },
            original_attributes=data["original_attributes"],
            original_equipment=data["original_equipment"],
        )

    def save(self, folder: Path) -> Path:
        """Write ``<folder>/<pseudonymous study UID>.json`` durably (0600); returns the path.

        Temp file -> fsync -> rename -> fsync folder, as every durable write of the node.
        """
        path = self.path_in(folder, self.pseudonymous_study_uid)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = folder / f".{path.name}.{secrets.token_hex(8)}.tmp"
        data = json.dumps(self.to_json(), ensure_ascii=False, sort_keys=True).encode("utf-8")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink()
            raise
        os.close(fd)
        os.replace(temp, path)
        fsync_dir(folder)
        return path

    @classmethod
    def load(cls, folder: Path, pseudonymous_study_uid: str, secret: bytes) -> StudyMapping:
        """Read the mapping of the study a result refers to.

        Raises
        ------
        PrivacyError
            If the UID is not conformant (it names a file) or no mapping exists for it.
        """
        path = cls.path_in(folder, pseudonymous_study_uid)
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise PrivacyError("no de-identification mapping for that study") from None
        return cls.from_json(data, secret)

    @staticmethod
    def path_in(folder: Path, pseudonymous_study_uid: str) -> Path:
        """The file of one study's mapping; the UID is checked before it names a file."""
        if not valid_uid(pseudonymous_study_uid):
            raise PrivacyError("a non-conformant Study Instance UID cannot name a mapping")
        return folder / f"{pseudonymous_study_uid}.json"
