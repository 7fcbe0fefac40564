"""Core: what the node's DICOMweb sides share: STOW-RS media types and response attributes.

PS3.18 10.5 (Store Transaction): the request is ``multipart/related`` with a ``type``
parameter naming the parts' media type; the response is a data set in
``application/dicom+json`` (PS3.18 F.2) with the Retrieve URL (0008,1190), Failed SOP
Sequence (0008,1198), Referenced SOP Sequence (0008,1199), Failure Reason (0008,1197)
and Warning Reason (0008,1196). The receiving side is :mod:`dicom_ai_node.web.stow`, the
sending side :mod:`dicom_ai_node.send.stow`.
"""

from __future__ import annotations

__all__ = [
    "DICOM_JSON",
    "DICOM_PART",
    "FAILED_SOP_SEQUENCE",
    "FAILURE_REASON",
    "MULTIPART_RELATED",
    "REFERENCED_SOP_SEQUENCE",
    "RETRIEVE_URL",
    "STOW_CONTENT_TYPE",
    "WARNING_REASON",
]

#: The media type of each part the node sends and accepts (PS3.18 8.7.3.5.1).
DICOM_PART = "application/dicom"
#: The response's media type (PS3.18 F.2).
DICOM_JSON = "application/dicom+json"
MULTIPART_RELATED = "multipart/related"
#: A request's Content-Type without its boundary; the ``type`` parameter is required by
#: some archives (Orthanc answers 415 without it) and always sent.
STOW_CONTENT_TYPE = f'{MULTIPART_RELATED}; type="{DICOM_PART}"'

#: Response attributes (PS3.18 Table 10.5.3-1), as DICOM JSON keys.
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
