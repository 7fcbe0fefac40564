"""Store: the two halves of a durable write (temp file, then rename into place)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_ai_node.errors import StorageError
from dicom_ai_node.store import files as files_module
from dicom_ai_node.store.files import FileStore


def test_write_temp_then_commit_is_write(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    temp = files.write_temp([b"head", memoryview(b"-body")])
    assert temp.size == 9 and temp.path.parent == files.tmp
    assert not (tmp_path / "instances/1/2/3.dcm").exists()
    assert files.commit(temp, "instances/1/2/3.dcm") == 9
    assert (tmp_path / "instances/1/2/3.dcm").read_bytes() == b"head-body"
    assert not list(files.tmp.iterdir())


def test_commit_outside_the_root_leaves_nothing(tmp_path: Path) -> None:
    files = FileStore(tmp_path / "root")
    temp = files.write_temp(b"x")
    with pytest.raises(StorageError):
        files.commit(temp, "../escaped.dcm")
    assert not list(files.tmp.iterdir())
    assert not (tmp_path / "escaped.dcm").exists()


def test_discard_removes_the_temp_file(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    temp = files.write_temp(b"x")
    files.discard(temp)
    assert not temp.path.exists()


def test_absolute_refuses_escapes_and_links_out(tmp_path: Path) -> None:
    files = FileStore(tmp_path / "root")
    assert files.absolute("instances/1/2/3.dcm") == tmp_path / "root/instances/1/2/3.dcm"
    assert files.absolute("instances/1/2/4.dcm") == tmp_path / "root/instances/1/2/4.dcm"
    for bad in ("../x.dcm", "instances/1/2/../../../../x"):
        with pytest.raises(StorageError):
            files.absolute(bad)
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(b"x")
    (tmp_path / "root/instances/1/2").mkdir(parents=True)
    (tmp_path / "root/instances/1/2/5.dcm").symlink_to(outside)
    with pytest.raises(StorageError):
        files.absolute("instances/1/2/5.dcm")  # the folder is remembered, the link is not


def test_commit_fsyncs_the_temp_file_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = FileStore(tmp_path)
    events: list[str] = []
    real_fsync, real_replace = files_module.fsync_file, files_module.os.replace
    monkeypatch.setattr(
        files_module, "fsync_file", lambda p: (events.append(f"fsync {p.suffix}"), real_fsync(p))
    )
    monkeypatch.setattr(
        files_module.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))
    )
    files.write("instances/1/2/3.dcm", b"first")
    temp = files.write_temp(b"again")
    files.commit(temp, "instances/1/2/3.dcm")
    assert events == ["fsync .part", "rename", "fsync .part", "rename"]
    assert (tmp_path / "instances/1/2/3.dcm").read_bytes() == b"again"


def test_a_failed_fsync_leaves_nothing_at_a_new_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = FileStore(tmp_path)

    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files_module, "fsync_file", broken)
    with pytest.raises(StorageError):
        files.write("instances/1/2/3.dcm", b"x")
    assert not (tmp_path / "instances/1/2/3.dcm").exists()
    assert not list(files.tmp.iterdir())
