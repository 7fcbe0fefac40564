"""Store: the operator's history (``dicom-ai-node jobs``) prints a peer's text escaped."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dicom_ai_node.store.db import Database
from dicom_ai_node.store.index import SeriesAttrs, index_instance
from dicom_ai_node.store.report import study_report

from .test_store_index import T0, rec


def test_control_characters_a_peer_sent_reach_no_terminal(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    db.migrate()
    hostile = "Lung\x1b[2J\r\nstudy 9.9.9 (forged)"
    index_instance(
        db.session,
        dataclasses.replace(
            rec(1, T0), series=SeriesAttrs(modality="CT", series_description=hostile)
        ),
    )
    report = study_report(db.session)
    db.dispose()
    assert "\x1b" not in report and "\r" not in report
    assert "'Lung\\x1b[2J\\r\\nstudy 9.9.9 (forged)'" in report
    assert not any(line.startswith("study 9.9.9") for line in report.splitlines())
