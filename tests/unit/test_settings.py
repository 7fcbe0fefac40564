"""Settings: every key documented, environment overrides, validation with clear messages."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from dicom_ai_node.errors import ConfigError
from dicom_ai_node.send.retry import RetryPolicy
from dicom_ai_node.send.senders import DELIVER_INTERVAL_S
from dicom_ai_node.settings import (
    Destination,
    KnownAE,
    NodeSettings,
    load_settings,
    render_config,
)

REPO = Path(__file__).resolve().parents[2]


def _all_fields(cls: type) -> list[dataclasses.Field]:  # type: ignore[type-arg]
    out = []
    for f in dataclasses.fields(cls):
        out.append(f)
        if isinstance(f.type, str) and f.type.endswith("Settings"):
            out += _all_fields(type(getattr(NodeSettings(), f.name)))
    return out


def test_every_setting_has_help_text() -> None:
    for cls in (NodeSettings, KnownAE, Destination):
        for f in _all_fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_init_output_documents_every_key_and_parses() -> None:
    text = render_config()
    parsed = tomllib.loads(text)
    settings = NodeSettings()
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                assert sub.name in parsed[f.name], f"{f.name}.{sub.name} missing from init output"
                assert sub.metadata["help"] in text


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[dicom]\nport = 2000\nae_title = "FROMFILE"\n')
    settings = load_settings(path, env={"DICOM_AI_NODE_DICOM_PORT": "3000"})
    assert settings.dicom.port == 3000 and settings.dicom.ae_title == "FROMFILE"
    assert settings.base_dir == str(tmp_path)
    assert settings.path("x") == tmp_path / "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[dicom]\nport = 70000\n", "dicom.port"),
        ('[dicom]\nae_title = "WAY_TOO_LONG_AE_TITLE"\n', "AE title"),
        ("[dicom]\nnonsense = 1\n", "unknown setting"),
        ('[assemble]\nlate_instance_policy = "ignore"\n', "late_instance_policy"),
        ('[dicom]\nport = "abc"\n', "dicom_port"),
        ('[[ae_table]]\nae_title = "PACS"\nhost = ""\n', "host is empty"),
        ("[send]\nretry_initial_s = 10\nretry_max_s = 5\n", "send.retry_max_s"),
        ("[send]\nretry_initial_s = 0\n", "send.retry_initial_s"),
        ("[send]\nretry_window_s = -1\n", "send.retry_window_s"),
        ("[send]\ntimeout_s = 0\n", "send.timeout_s"),
        ("[tls]\nenabled = true\n", "tls.enabled needs"),
        ('[tls]\nclient_certificates = "maybe"\n', "tls.client_certificates"),
        ("[tls]\nplaintext = false\n", "tls.plaintext"),
        ('[[ae_table]]\nae_title = "PACS"\nhost = "h"\ntls = true\n', "tls = true needs"),
    ],
)
def test_invalid_settings_fail_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env={})


def test_bad_environment_value_is_named() -> None:
    with pytest.raises(ConfigError, match="DICOM_AI_NODE_STORAGE_FSYNC"):
        load_settings(None, env={"DICOM_AI_NODE_STORAGE_FSYNC": "maybe"})


def test_known_ae_lookup() -> None:
    settings = NodeSettings(ae_table=(KnownAE(ae_title="PACS", host="10.0.0.1", port=104),))
    assert settings.known_ae("PACS ") is not None
    assert settings.known_ae("OTHER") is None


def test_readme_names_both_commands_and_every_cli_command() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
    for command in ("models list", "route explain", "send PATH --to", "jobs", "init"):
        assert command in readme


def test_default_backoff_resumes_within_a_minute_and_retries_for_72_h() -> None:
    """Issue 4: held results follow within 60 s of a destination's return, for at least 72 h.

    The next attempt after any failure is at most ``retry_max_s`` away, found by the
    delivery loop within ``DELIVER_INTERVAL_S``; what is left must cover one attempt
    (tests/integration/test_send_outage.py measures it).
    """
    send = NodeSettings().send
    attempt_s = 20.0  # room for the attempt that succeeds (measured: well under 1 s)
    assert send.retry_max_s + DELIVER_INTERVAL_S + attempt_s <= 60.0
    assert RetryPolicy(send.retry_initial_s, send.retry_max_s).delay_s(10_000) == send.retry_max_s
    assert send.retry_window_s >= 72 * 3600
