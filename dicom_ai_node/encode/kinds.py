"""Encode: the result kinds (:mod:`dicom_ai_node.result_kinds`), where the encoders look."""

from __future__ import annotations

from ..result_kinds import DEFAULT_RESULTS, RESULT_KINDS, ResultKind

__all__ = ["DEFAULT_RESULTS", "RESULT_KINDS", "ResultKind"]
