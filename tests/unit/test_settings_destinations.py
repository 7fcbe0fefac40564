"""Settings: destinations as strings or tables, and the result kinds each one gets."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dicom_ai_node.errors import ConfigError
from dicom_ai_node.result_kinds import DEFAULT_RESULTS, RESULT_KINDS
from dicom_ai_node.send.deliver import all_destinations, destinations_for, outbox_kinds
from dicom_ai_node.settings import (
    Destination,
    KnownAE,
    NodeSettings,
    SendSettings,
    load_settings,
    render_config,
)

WEB_TABLE = (
    '{ address = "https://pacs.example.org/dicom-web", protocol = "dicomweb", '
    'results = ["GSPS", "SEG"], auth = "bearer", credentials_file = "token", ca_file = "ca.pem" }'
)
CONFIG = f"""
[send]
destinations = [
  "ARCHIVE@10.0.0.6:104",
  {{ address = "VIEWER@10.0.0.7:104", results = ["sc", "KOS", "pdf", "sr"] }},
  {WEB_TABLE},
]

[[ae_table]]
ae_title = "MODALITY"
host = "10.0.0.9"
port = 11112
results = ["SC"]

[[ae_table]]
ae_title = "ARCHIVE"
host = "10.0.0.6"
port = 104
results = ["SR", "SEG", "SC", "KOS"]
"""


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> NodeSettings:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return load_settings(path, env=env or {})


def test_destinations_are_strings_or_tables_and_each_names_its_kinds(tmp_path: Path) -> None:
    settings = _load(tmp_path, CONFIG)
    keys = [d.address for d in settings.send.destinations]
    assert keys == [
        "ARCHIVE@10.0.0.6:104",
        "VIEWER@10.0.0.7:104",
        "https://pacs.example.org/dicom-web",
    ]
    assert destinations_for(settings, "MODALITY") == ["MODALITY@10.0.0.9:11112", *keys]
    assert all_destinations(settings) == [*keys, "MODALITY@10.0.0.9:11112"]
    kinds = outbox_kinds(settings, destinations_for(settings, "MODALITY"))
    assert kinds == {
        "MODALITY@10.0.0.9:11112": ("SC",),
        # a plain string takes the AE table entry of the same AE, host and port
        "ARCHIVE@10.0.0.6:104": ("SEG", "SR", "SC", "KOS"),
        # upper-cased and in the order the encoders make them
        "VIEWER@10.0.0.7:104": ("SR", "SC", "KOS", "PDF"),
        "https://pacs.example.org/dicom-web": ("SEG", "GSPS"),
    }
    web = settings.destination("https://pacs.example.org/dicom-web")
    assert (web.protocol, web.auth, web.credentials_file, web.ca_file) == (
        "dicomweb",
        "bearer",
        "token",
        "ca.pem",
    )
    assert settings.destination("VIEWER@10.0.0.7:104").protocol == "dimse"


def test_destinations_as_an_array_of_tables(tmp_path: Path) -> None:
    text = (
        '[[send.destinations]]\naddress = "https://p/dicom-web"\nprotocol = "dicomweb"\n'
        'results = ["PDF"]\n[[send.destinations]]\naddress = "A@h:1"\n'
    )
    settings = _load(tmp_path, text)
    assert [(d.address, d.results) for d in settings.send.destinations] == [
        ("https://p/dicom-web", ("PDF",)),
        ("A@h:1", DEFAULT_RESULTS),
    ]


def test_a_key_no_longer_configured_gets_the_defaults() -> None:
    settings = NodeSettings()
    assert settings.destination("OLD@h:104") == Destination("OLD@h:104")
    gone = settings.destination("http://old.example/dicom-web")
    assert (gone.protocol, gone.results) == ("dicomweb", DEFAULT_RESULTS)


def test_defaults_keep_seg_and_sr() -> None:
    assert DEFAULT_RESULTS == ("SEG", "SR")
    assert KnownAE(ae_title="PACS", host="h").results == DEFAULT_RESULTS
    assert Destination("PACS@h:104").results == DEFAULT_RESULTS
    assert set(DEFAULT_RESULTS) <= RESULT_KINDS.keys()


def test_environment_gives_string_destinations() -> None:
    settings = load_settings(None, env={"DICOM_AI_NODE_SEND_DESTINATIONS": "A@h:1, B@h:2"})
    assert [d.address for d in settings.send.destinations] == ["A@h:1", "B@h:2"]


def test_code_may_name_destinations_as_strings() -> None:
    send = SendSettings(destinations=("A@h:1", Destination("B@h:2", results=("SC",))))  # type: ignore[arg-type]
    assert [d.address for d in send.destinations] == ["A@h:1", "B@h:2"]


def test_rendered_settings_with_tables_parse_back(tmp_path: Path) -> None:
    settings = _load(tmp_path, CONFIG)
    text = render_config(settings)
    assert "results" in text and "credentials_file" in text
    again = _load(tmp_path, text)
    assert again.send.destinations == settings.send.destinations
    for kind in RESULT_KINDS.values():  # each kind is explained where settings are written
        assert kind.description in render_config()
    tomllib.loads(render_config())


WEB = 'address = "https://p/dicom-web", protocol = "dicomweb"'


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            '{ address = "A@h:1", results = ["SEG", "MPEG"] }',
            r"unknown result kind\(s\) \['MPEG'\]",
        ),
        ('{ address = "A@h:1", results = [] }', "results is empty"),
        ('{ address = "A@h:1", results = ["KOS", "SR"] }', "KOS references the key images"),
        ('{ address = "A@h:1", results = ["KOS", "SC"] }', "add SC and SR"),
        ('{ address = "A@h:1", protocol = "ftp" }', "protocol 'ftp' is not one of dimse"),
        ('{ address = "A@h:1", protocol = "dicomweb" }', "dicomweb needs an http"),
        ('{ address = "https://p/dicom-web" }', 'a URL needs protocol = "dicomweb"'),
        ('"https://p/dicom-web"', 'a URL needs protocol = "dicomweb"'),
        (f'{{ {WEB}, credentials_file = "t" }}', "credentials_file is given but auth is none"),
        (f'{{ {WEB}, auth = "bearer" }}', "auth bearer needs credentials_file"),
        (f'{{ {WEB}, auth = "digest", credentials_file = "t" }}', "auth 'digest' is not one of"),
        (f"{{ {WEB}, tls = true }}", "tls is for dimse"),
        ('{ address = "http://p/x", protocol = "dicomweb", ca_file = "c" }', "ca_file needs"),
        ('{ address = "A@h:1", auth = "basic", credentials_file = "t" }', "are for dicomweb"),
        ('{ address = "A@h:1", tls = true }', "tls = true needs tls.certificate"),
        ('{ address = "A@h:1", colour = "red" }', "unknown setting"),
        ('{ results = ["SC"] }', "has no address"),
        ('"A@h:1", "A@h:1"', "listed more than once"),
        ("42", "neither an address nor a table"),
    ],
)
def test_invalid_destinations_fail_with_the_reason(
    tmp_path: Path, entry: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, f"[send]\ndestinations = [{entry}]\n")


def test_ae_table_results_are_checked(tmp_path: Path) -> None:
    text = '[[ae_table]]\nae_title = "PACS"\nhost = "h"\nresults = ["SEG", "XA"]\n'
    with pytest.raises(ConfigError, match=r"ae_table entry PACS: unknown result kind\(s\)"):
        _load(tmp_path, text)


def test_credentials_never_appear_in_what_settings_show(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cr3t-token\n")
    settings = _load(tmp_path, CONFIG)
    shown = repr(settings) + render_config(settings)
    assert "s3cr3t-token" not in shown
