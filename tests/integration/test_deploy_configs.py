"""Each service's configuration in deploy/ checked by its own tool, as the compose stack mounts it.

- Prometheus: ``promtool check config`` on deploy/prometheus/prometheus.yml, whose rule
  files must resolve, and which scrapes the compose service the node is.
- Orthanc: Debian's Orthanc started with deploy/orthanc/orthanc.json, only the ports, the
  folders, the plugin's path and the Lua script's path changed from what the container
  has (the script is the repository file the compose file mounts); its DICOMweb API
  answers and it loaded the auto-forward rule.
- Grafana: the dashboard and the provisioning files against JSON Schemas of what Grafana
  requires (deploy/grafana/schema/), and the schemas refuse what Grafana would refuse.
- OHIF: deploy/ohif/app-config.js evaluated by node as the browser would, its data source
  reading /dicom-web on the viewer's origin, which deploy/ohif/nginx.conf passes to
  Orthanc's DICOMweb root.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from ..orthanc import RECIPE, OrthancFactory
from ..tools import require_tool

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
ORTHANC_JSON = DEPLOY / "orthanc" / "orthanc.json"
#: What differs between the container and a test process: nothing else may be overridden.
ORTHANC_OVERRIDES = {
    "HttpPort",
    "DicomPort",
    "StorageDirectory",
    "IndexDirectory",
    "Plugins",
    "LuaScripts",
    # in the container Orthanc serves the stack's network; a test Orthanc serves loopback
    "RemoteAccessAllowed",
    # lets the test ask Orthanc's Lua context whether the rule is loaded (off in the stack)
    "ExecuteLuaEnabled",
}


def container_mounts(service: str) -> dict[str, Path]:
    """Container path -> repository file of each bind mount of a compose service."""
    out = {}
    for entry in COMPOSE["services"][service].get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if source.startswith("./"):
            out[target] = REPO / source
    return out


# --- Prometheus --------------------------------------------------------------------


def test_prometheus_config_passes_promtool_with_its_rule_files() -> None:
    promtool = require_tool("promtool")
    config_path = DEPLOY / "prometheus" / "prometheus.yml"
    proc = subprocess.run(
        [promtool, "check", "config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    config = yaml.safe_load(config_path.read_text())
    rule_files = config["rule_files"]
    assert f"SUCCESS: {len(rule_files)} rule files found" in out, out
    assert "SUCCESS: 11 rules found" in out, out
    # in the container each rule file sits where the configuration names it
    mounted = container_mounts("prometheus")
    config_dir = Path("/etc/prometheus")
    assert mounted[str(config_dir / "prometheus.yml")] == config_path
    for rule_file in rule_files:
        assert mounted[str(config_dir / rule_file)] == config_path.parent / rule_file
    # it scrapes the node service's web port
    (job,) = config["scrape_configs"]
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    assert target == "node:8080" and "node" in COMPOSE["services"]


# --- Orthanc -----------------------------------------------------------------------


def test_orthanc_starts_with_the_shipped_configuration(orthanc_factory: OrthancFactory) -> None:
    shipped = json.loads(ORTHANC_JSON.read_text())
    mounted = container_mounts("orthanc")
    assert mounted["/etc/orthanc/orthanc.json"] == ORTHANC_JSON
    lua_scripts = [mounted[path] for path in shipped["LuaScripts"]]
    assert lua_scripts == [RECIPE]
    kept = {k: v for k, v in shipped.items() if k not in ORTHANC_OVERRIDES}
    pacs = orthanc_factory.start(lua_scripts=lua_scripts, extra={**kept, "ExecuteLuaEnabled": True})

    # what ran is the shipped file but for the overrides
    ran = json.loads((orthanc_factory.tmp_path / "orthanc-0" / "orthanc.json").read_text())
    assert {k: v for k, v in ran.items() if k in shipped and k not in ORTHANC_OVERRIDES} == kept
    assert ran["LuaScripts"] == [str(RECIPE)]
    assert Path(ran["Plugins"][0]).name == Path(shipped["Plugins"][0]).name
    assert pacs.get("/system")["Name"] == shipped["Name"]
    assert pacs.get("/system")["DicomAet"] == shipped["DicomAet"]

    # the DICOMweb plugin serves QIDO-RS under the configured root
    assert "dicom-web" in pacs.get("/plugins")
    root = shipped["DicomWeb"]["Root"].rstrip("/")
    studies = pacs.request("GET", f"{root}/studies", Accept="application/dicom+json")
    assert json.loads(studies or b"[]") == []
    # the auto-forward rule is loaded: its stable-study callback exists in Orthanc's Lua
    said = pacs.request("POST", "/tools/execute-script", b"print(type(OnStableStudy))")
    assert said.decode().strip() == "function", pacs.tail()
    assert pacs.get(f"/modalities/{next(iter(shipped['DicomModalities']))}/configuration")


# --- Grafana -----------------------------------------------------------------------


def schema(name: str) -> jsonschema.protocols.Validator:
    loaded = json.loads((DEPLOY / "grafana" / "schema" / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(loaded)
    return jsonschema.Draft202012Validator(loaded)


def errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_the_grafana_dashboard_passes_its_schema() -> None:
    validator = schema("dashboard")
    dashboard = json.loads((DEPLOY / "grafana" / "dicom-ai-node.json").read_text())
    assert errors(validator, dashboard) == []
    panels = dashboard["panels"]
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
    assert len({p["id"] for p in panels}) == len(panels)  # Grafana needs unique panel ids
    # what Grafana would refuse, the schema refuses
    for broken in _broken_dashboards(dashboard):
        assert errors(validator, broken), broken.get("uid")


def _broken_dashboards(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    shared = {**copy.deepcopy(dashboard), "__inputs": [{"name": "DS_PROMETHEUS"}]}
    no_uid = {k: v for k, v in copy.deepcopy(dashboard).items() if k != "uid"}
    too_wide = copy.deepcopy(dashboard)
    too_wide["panels"][1]["gridPos"]["w"] = 25
    no_ref = copy.deepcopy(dashboard)
    del no_ref["panels"][1]["targets"][0]["refId"]
    return [shared, no_uid, too_wide, no_ref]


def test_grafana_provisioning_files_pass_their_schema_and_match_the_stack() -> None:
    validator = schema("provisioning")
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    dashboards = yaml.safe_load((provisioning / "dashboards" / "dicom-ai-node.yml").read_text())
    assert errors(validator, datasources) == []
    assert errors(validator, dashboards) == []
    assert errors(validator, {"apiVersion": 1, "providers": [{"name": "x", "type": "file"}]})

    # the data source is the stack's Prometheus, of the type the dashboard's queries use
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in COMPOSE["services"]
    dashboard = json.loads((DEPLOY / "grafana" / "dicom-ai-node.json").read_text())
    types = {p["datasource"]["type"] for p in dashboard["panels"] if "datasource" in p}
    assert types == {source["type"]}
    # the provider reads the folder the compose file mounts the dashboard into
    (provider,) = dashboards["providers"]
    mounted = container_mounts("grafana")
    folder = provider["options"]["path"]
    assert mounted[f"{folder}/dicom-ai-node.json"] == DEPLOY / "grafana" / "dicom-ai-node.json"
    assert mounted["/etc/grafana/provisioning/datasources"] == provisioning / "datasources"
    assert mounted["/etc/grafana/provisioning/dashboards"] == provisioning / "dashboards"


# --- OHIF --------------------------------------------------------------------------

#: Evaluates app-config.js as a browser would (a ``window`` global) and prints window.config.
_READ_CONFIG = """
const fs = require('fs'); const vm = require('vm');
const window = {};
vm.runInNewContext(fs.readFileSync(process.argv[1], 'utf8'), { window });
process.stdout.write(JSON.stringify(window.config));
"""


def read_ohif_config(path: Path) -> dict[str, Any]:
    node = require_tool("node")
    proc = subprocess.run(
        [node, "-e", _READ_CONFIG, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    config: dict[str, Any] = json.loads(proc.stdout)
    return config


def nginx_block(conf: str, header: str) -> str:
    """The text between the braces of the block that ``header`` opens (nested blocks kept)."""
    start = conf.index(header + " {") + len(header) + 2
    depth, end = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(conf[end], 0)
        end += 1
    return conf[start : end - 1]


def nginx_directive(conf: str, header: str, name: str) -> str:
    """The value of a directive written at the top level of a block."""
    found = re.search(rf"^\s*{name}\s+(\S+);", nginx_block(conf, header), re.MULTILINE)
    assert found, f"no {name} in {header}"
    return found.group(1)


def test_ohif_reads_orthanc_dicomweb_through_its_own_origin(tmp_path: Path) -> None:
    app_config = DEPLOY / "ohif" / "app-config.js"
    config = read_ohif_config(app_config)
    sources = {s["sourceName"]: s for s in config["dataSources"]}
    source = sources[config["defaultDataSourceName"]]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    settings = source["configuration"]
    assert settings["qidoRoot"] == settings["wadoRoot"] == "/dicom-web"

    # the viewer's web server passes that path to Orthanc's DICOMweb root
    nginx = (DEPLOY / "ohif" / "nginx.conf").read_text()
    orthanc = json.loads(ORTHANC_JSON.read_text())
    upstream = f"http://orthanc:{orthanc['HttpPort']}{orthanc['DicomWeb']['Root']}"
    assert nginx_directive(nginx, "location /dicom-web/", "proxy_pass") == upstream
    assert "limit_except GET" in nginx_block(nginx, "location /dicom-web/")  # read-only
    # and serves this file as /app-config.js, from where the compose file mounts it
    alias = nginx_directive(nginx, "location = /app-config.js", "alias")
    mounted = container_mounts("ohif")
    assert mounted[alias] == app_config
    assert mounted["/etc/nginx/conf.d/default.conf"] == DEPLOY / "ohif" / "nginx.conf"

    # a configuration that does not parse fails here, not in the browser
    broken = tmp_path / "app-config.js"
    broken.write_text(app_config.read_text().replace("dataSources: [", "dataSources: [[", 1))
    with pytest.raises(AssertionError):
        read_ohif_config(broken)
