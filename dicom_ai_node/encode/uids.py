"""Encode: deterministic UIDs for result objects, model devices and tracked findings.

Every UID the encoders write is derived from the job key (or the model name and version)
with pydicom's ``generate_uid`` under :data:`UID_ROOT` (PS3.5 9.1 and B.2: a hash of the
inputs, below an organisational root). Encoding the same job twice therefore gives the
same Study/Series/SOP/Tracking UIDs, so a re-send replaces instead of duplicating.
"""

from __future__ import annotations

from ..identity import UID_ROOT, device_uid, hashed_uid

__all__ = ["UID_ROOT", "device_uid", "result_uid", "tracking_uid"]


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
    return hashed_uid("result", job_key, *parts)


def tracking_uid(job_key: str, label_value: int) -> str:
    """Return the Tracking Unique Identifier (112040, DCM) of one label (PS3.16 TID 4108).

    The SEG segment and the SR measurement group of the same label share it, which is how
    TID 1500 links the two descriptions of one finding.
    """
    return result_uid(job_key, "tracking", str(label_value))
