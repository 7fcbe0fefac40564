"""docker-compose.yml: valid for ``docker-compose config``, and the stack wired as the issue says.

Debian's docker-compose 1.29 validates a compose file against the compose schema and
interpolates its variables without a Docker engine, so ``docker-compose config`` is the
check (``scripts/install-tools.sh`` installs it; a missing one fails under ``CI=true``).
The tests below read its output, the file as Compose resolves it, and check what a site
relies on: the six services, pinned images, web ports on 127.0.0.1 only, named volumes for
every service that keeps data, the node starting after PostgreSQL is healthy, no password
in the file, and the node, Orthanc and the recipe naming each other the same way.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from dicom_ai_node.settings import load_settings

from ..tools import require_tool

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / "env.example"
RECIPE = REPO / "docs" / "recipes" / "orthanc-autoforward.lua"
SECRETS = {"POSTGRES_PASSWORD": "compose-test-1", "GRAFANA_ADMIN_PASSWORD": "compose-test-2"}
SERVICES = {"node", "postgres", "orthanc", "ohif", "prometheus", "grafana"}
#: Container ports that serve a web interface or API: published on 127.0.0.1 only.
WEB_PORTS = {"node": 8080, "orthanc": 8042, "ohif": 8080, "prometheus": 9090, "grafana": 3000}
#: Where each stateful service keeps its data: a named volume must be mounted there.
DATA_PATHS = {
    "node": "/data",
    "postgres": "/var/lib/postgresql/data",
    "orthanc": "/var/lib/orthanc/db",
    "prometheus": "/prometheus",
    "grafana": "/var/lib/grafana",
}


def compose_config(tmp_path: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` on the repository's file with only ``env`` (and PATH) set.

    An empty ``--env-file`` keeps a ``.env`` a developer may have from taking part.
    """
    exe = require_tool("docker-compose")
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    args = [exe, "--env-file", str(env_file), "-f", str(COMPOSE), "config"]
    full_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env}
    return subprocess.run(
        args, capture_output=True, text=True, env=full_env, timeout=60, check=False, cwd=REPO
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file as ``docker-compose config`` resolves it (the test secrets set)."""
    proc = compose_config(tmp_path_factory.mktemp("compose"), SECRETS)
    assert proc.returncode == 0, proc.stderr
    resolved: dict[str, Any] = yaml.safe_load(proc.stdout)
    return resolved


def ports(service: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(host address, container port) of each published port; "" is every address."""
    out = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.append((str(entry.get("host_ip", "")), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        out.append((parts[0] if len(parts) == 3 else "", int(parts[-1])))
    return out


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume or an absolute host path) of each volume."""
    out = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out[str(entry["target"])] = str(entry["source"])
        else:
            source, target = str(entry).split(":")[:2]
            out[target] = source
    return out


def test_docker_compose_config_accepts_the_file(config: dict[str, Any]) -> None:
    assert set(config["services"]) == SERVICES
    assert set(config["volumes"]) == {f"{name}-data" for name in DATA_PATHS}


def test_docker_compose_config_refuses_a_broken_file(tmp_path: Path) -> None:
    """The check is the compose schema's, not ours: an unknown option fails it."""
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restart_x: no\n", 1)
    broken.write_text(text)
    exe = require_tool("docker-compose")
    proc = subprocess.run(
        [exe, "-f", str(broken), "--project-directory", str(REPO), "config", "-q"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **SECRETS},
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0 and "restart_x" in proc.stderr, proc.stderr


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_no_password_has_a_default(tmp_path: Path, secret: str) -> None:
    """Without the site's password docker-compose refuses to start, naming the variable."""
    others = {k: v for k, v in SECRETS.items() if k != secret}
    proc = compose_config(tmp_path, others)
    assert proc.returncode != 0 and secret in proc.stderr, proc.stderr
    assert not re.search(r"PASSWORD:-", COMPOSE.read_text())


def test_every_variable_is_documented_in_the_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert used and used == documented, (used - documented, documented - used)
    example = dict(re.findall(r"^([A-Z_]+)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert all(example[name] == "" for name in SECRETS)  # the example holds no password


def test_images_are_pinned(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        if name == "node":
            assert service["build"]["context"] == str(REPO)
            continue
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"


def test_web_interfaces_listen_on_loopback_only(config: dict[str, Any]) -> None:
    for name, port in WEB_PORTS.items():
        published = [host for host, target in ports(config["services"][name]) if target == port]
        assert published == ["127.0.0.1"], (name, ports(config["services"][name]))
    # DICOM ports are for modalities and PACS on the network
    assert ("", 11112) in ports(config["services"]["node"])
    assert ("", 4242) in ports(config["services"]["orthanc"])
    assert ports(config["services"]["postgres"]) == []  # only the stack's network reaches it


def test_services_that_keep_data_have_named_volumes(config: dict[str, Any]) -> None:
    for name, path in DATA_PATHS.items():
        assert mounts(config["services"][name]).get(path) == f"{name}-data", name


def test_every_mounted_file_is_in_the_repository(config: dict[str, Any]) -> None:
    binds = [s for svc in config["services"].values() for s in mounts(svc).values() if "/" in s]
    assert len(binds) >= 10
    for source in binds:
        assert Path(source).exists() and Path(source).is_relative_to(REPO), source


def test_the_node_waits_for_a_healthy_postgres(config: dict[str, Any]) -> None:
    node, postgres = config["services"]["node"], config["services"]["postgres"]
    assert node["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in postgres["healthcheck"]["test"]


def node_settings(config: dict[str, Any]) -> Any:
    """The node's settings as its container gets them: the mounted file and its environment."""
    node = config["services"]["node"]
    toml = Path(mounts(node)["/app/dicom-ai-node.toml"])
    return load_settings(toml, env=node["environment"])


def test_the_node_uses_postgres_and_knows_orthanc(config: dict[str, Any]) -> None:
    settings = node_settings(config)
    postgres = config["services"]["postgres"]["environment"]
    url = settings.database_url
    user, db = postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]
    assert url == (f"postgresql+psycopg://{user}:{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/{db}")
    assert settings.storage.root == "/data/storage"
    subnet = config["networks"]["stack"]["ipam"]["config"][0]["subnet"]
    assert subnet in settings.web.metrics_networks  # Prometheus may scrape
    assert "postgres" in (REPO / "Dockerfile").read_text()  # psycopg: the postgres extra


def test_orthanc_the_recipe_and_the_node_name_each_other(config: dict[str, Any]) -> None:
    settings = node_settings(config)
    orthanc_mounts = mounts(config["services"]["orthanc"])
    command = config["services"]["orthanc"]["command"]
    orthanc = json.loads(Path(orthanc_mounts[command[-1]]).read_text())
    target = re.search(r"^local TARGET = '([^']*)'", RECIPE.read_text(), re.MULTILINE)
    memory = re.search(r"^local MEMORY = '([^']*)'", RECIPE.read_text(), re.MULTILINE)
    assert target and memory
    # Orthanc forwards to the node's AE title, service name and DICOM port
    assert orthanc["DicomModalities"][target.group(1)] == [
        settings.dicom.ae_title,
        "node",
        settings.dicom.port,
    ]
    assert memory.group(1) in orthanc["UserMetadata"]
    (lua,) = orthanc["LuaScripts"]
    assert Path(orthanc_mounts[lua]) == RECIPE  # the very file the recipe tests load
    # the node sends results back to Orthanc by its AE title, service name and port
    entry = settings.known_ae(orthanc["DicomAet"])
    assert entry is not None and (entry.host, entry.port) == ("orthanc", orthanc["DicomPort"])
