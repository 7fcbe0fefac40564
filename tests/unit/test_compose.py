"""docker-compose.yml stays a valid compose file for the node with a data volume.

No Docker engine runs here, so `docker compose config` cannot be called; this checks
the structure the compose specification requires.
"""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_compose_file_structure() -> None:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    node = data["services"]["node"]
    assert node["command"] == ["dicom-ai-node", "serve"]
    assert any(v.endswith(":/data") for v in node["volumes"])
    assert set(data["volumes"]) == {v.split(":")[0] for v in node["volumes"]}
    assert all(k.startswith("DICOM_AI_NODE_") for k in node["environment"])
    assert (REPO / "Dockerfile").is_file()
