"""docs/operations.md names every metric, alert, action and screen, with each screen's picture."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dicom_ai_node.metrics import NodeMetrics
from dicom_ai_node.web.api_actions import ACTIONS
from dicom_ai_node.web.metrics import INDEX_GAUGES, PREFIX

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "operations.md").read_text()


def test_every_metric_of_the_node_is_documented() -> None:
    metrics = NodeMetrics(process=False)
    names = {family.name for family in metrics.registry.collect()}
    names |= {PREFIX + name for name in INDEX_GAUGES}  # read from the index at scrape time
    missing = sorted(n for n in names if n.startswith("dicom_ai_node") and n not in DOC)
    assert not missing, missing


def test_every_alert_is_documented() -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert len(alerts) >= 6
    assert not sorted(a for a in alerts if f"`{a}`" not in DOC)


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_every_action_is_documented() -> None:
    shown = {_shape(path) for path in re.findall(r"`POST (/api/v1/[^`\s]+)`", DOC)}
    assert not sorted(path for _, path in ACTIONS if _shape(path) not in shown)


def test_every_screen_has_its_picture() -> None:
    pictures = re.findall(r"!\[[^\]]*\]\((screenshots/[^)]+\.png)\)", DOC)
    assert len(pictures) >= 10
    for picture in pictures:
        assert (REPO / "docs" / picture).is_file(), picture
