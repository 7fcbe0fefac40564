"""Encode stage: deterministic UIDs for result objects, model devices and tracked findings.

Every UID the encoders write is derived from the job key (or the model name and version)
with pydicom's ``generate_uid`` under :data:`UID_ROOT` (PS3.5 9.1 and B.2: a hash of the
inputs, below an organisational root). Encoding the same job twice therefore gives the
same Study/Series/SOP/Tracking UIDs, so a re-send replaces instead of duplicating.
"""

from __future__ import annotations

import json

from pydicom.uid import generate_uid

__all__ = ["UID_ROOT", "device_uid", "result_uid", "tracking_uid"]

#: Root of every UID this node creates (the same root ``dicom_ai_node.testing`` uses).
UID_ROOT = "1.2.826.0.1.3680043.10.1453."


def _hashed_uid(*parts: str) -> str:
    # pydicom concatenates entropy sources without a separator, so ("ab", "c") and
    # ("a", "bc") would collide; one JSON array is unambiguous.
    return str(generate_uid(UID_ROOT, [json.dumps(list(parts), ensure_ascii=False)]))


def result_uid(job_key: str, *parts: str) -> str:
    """Return the UID of one thing a job produces, the same every time (PS3.5 B.2).

    Parameters
    ----------
    job_key:
        Identifies the job (one model run on one series or study).
    *parts:
        Name the thing within the job, e.g. ``("seg", "series")``.

    Returns
    -------
    str
        A UID of at most 64 characters under :data:`UID_ROOT`.

    Raises
    ------
    ValueError
        If ``job_key`` is empty.
    """
    if not job_key:
        raise ValueError("job_key must not be empty")
    return _hashed_uid("result", job_key, *parts)


def device_uid(name: str, version: str) -> str:
    """Return the Device UID (0018,1002) of one model version (PS3.3 C.7.5.1).

    Parameters
    ----------
    name, version:
        The model's name and version from its manifest.

    Returns
    -------
    str
        The same UID for the same name and version, a different one otherwise.

    Raises
    ------
    ValueError
        If ``name`` or ``version`` is empty.
    """
    if not name or not version:
        raise ValueError("device_uid needs a model name and version")
    return _hashed_uid("device", name, version)


def tracking_uid(job_key: str, label_value: int) -> str:
    """Return the Tracking Unique Identifier (112040, DCM) of one label (PS3.16 TID 4108).

    The SEG segment and the SR measurement group of the same label share it, which is how
    TID 1500 links the two descriptions of one finding.
    """
    return result_uid(job_key, "tracking", str(label_value))
