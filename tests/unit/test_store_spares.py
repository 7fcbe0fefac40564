"""Store: spare temp files (written ahead, handed out by size, overwritten and cut to size)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dicom_ai_node.store.files import FileStore
from dicom_ai_node.store.spares import DEFAULT_SIZE, GRANULE, SparePool, bucket

KIB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(folder: Path, budget: int, clock: Clock | None = None, **kw: int) -> SparePool:
    folder.mkdir(parents=True, exist_ok=True)
    return SparePool(
        folder,
        budget_bytes=budget,
        max_file_bytes=kw.get("max_file_bytes", 4 * 1024 * KIB),
        min_free_bytes=kw.get("min_free_bytes", 0),
        idle_s=0.5,
        clock=clock or Clock(),
    )


def spare_sizes(folder: Path) -> list[int]:
    return sorted(p.stat().st_size for p in folder.glob("*.spare"))


def test_bucket_rounds_up_to_granules() -> None:
    assert bucket(1) == GRANULE
    assert bucket(GRANULE) == GRANULE
    assert bucket(GRANULE + 1) == 2 * GRANULE
    assert bucket(526_000) == 9 * GRANULE == DEFAULT_SIZE


def test_fill_uses_the_budget_and_take_hands_out_by_size(tmp_path: Path) -> None:
    spares = pool(tmp_path, budget=5 * 128 * KIB)
    assert spares.fill(size=100 * KIB) == 5
    assert spare_sizes(tmp_path) == [128 * KIB] * 5
    assert spares.take(300 * KIB) is None  # too big for every spare
    small = spares.take(10 * KIB)  # a 64 KiB bucket: a spare one granule larger will do
    assert small is not None and small.stat().st_size == 128 * KIB
    got = spares.take(100 * KIB)
    assert got is not None and got.stat().st_size == 128 * KIB
    assert spares.count() == 3
    assert spares.take(5 * 1024 * KIB) is None  # above max_file_bytes


def test_fill_waits_until_no_instance_arrived_for_a_while(tmp_path: Path) -> None:
    clock = Clock()
    spares = pool(tmp_path, budget=4 * GRANULE, clock=clock)
    spares.take(GRANULE)  # an instance arrives: spares of its size are wanted
    assert spares.fill() == 0
    clock.now += 0.6
    assert spares.fill() == 4
    assert spare_sizes(tmp_path) == [GRANULE] * 4


def test_spares_follow_the_size_of_recent_instances(tmp_path: Path) -> None:
    clock = Clock()
    spares = pool(tmp_path, budget=4 * GRANULE, clock=clock)
    assert spares.fill(size=GRANULE) == 4
    spares.take(3 * GRANULE)  # larger instances now: old spares make room for new ones
    clock.now += 1
    assert spares.target_size() == 3 * GRANULE
    spares.fill()
    assert spare_sizes(tmp_path) == [3 * GRANULE]  # the old ones made room


def test_no_spare_below_the_free_space_reserve(tmp_path: Path) -> None:
    spares = pool(tmp_path, budget=4 * GRANULE, min_free_bytes=2**62)
    assert spares.fill() == 0
    assert spare_sizes(tmp_path) == []


def test_adopt_keeps_intact_spares_and_deletes_damaged_ones(tmp_path: Path) -> None:
    first = pool(tmp_path, budget=4 * GRANULE)
    first.fill(size=GRANULE)
    victims = sorted(tmp_path.glob("*.spare"))
    os.truncate(victims[0], 10)  # cut short by a crash
    (tmp_path / "not-a-spare.spare").write_bytes(b"x")
    again = pool(tmp_path, budget=4 * GRANULE)
    assert again.adopt() == 3
    assert not victims[0].exists() and not (tmp_path / "not-a-spare.spare").exists()
    assert again.count() == 3


def test_file_store_overwrites_a_spare_and_cuts_it_to_the_data(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s", spare_budget_bytes=4 * 128 * KIB)
    assert store.spares is not None
    store.spares.fill(size=128 * KIB)
    data = os.urandom(70 * KIB + 3)
    temp = store.write_temp([b"head", memoryview(data)])
    assert temp.path.suffix == ".spare" and store.spares.count() == 3
    store.commit(temp, "instances/1/2/3.dcm")
    assert store.absolute("instances/1/2/3.dcm").read_bytes() == b"head" + data
    assert not temp.path.exists()


def test_file_store_without_fsync_keeps_no_spares(tmp_path: Path) -> None:
    assert FileStore(tmp_path, fsync=False, spare_budget_bytes=1 << 20).spares is None
    assert FileStore(tmp_path, spare_budget_bytes=0).spares is None


def test_the_background_thread_fills_and_stops(tmp_path: Path) -> None:
    spares = SparePool(tmp_path, budget_bytes=3 * GRANULE, max_file_bytes=GRANULE, idle_s=0.01)
    spares.take(GRANULE)
    spares.start()
    try:
        deadline = time.monotonic() + 10
        while spares.count() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert spares.count() == 3
    finally:
        spares.stop()
    assert spares._thread is None


@pytest.mark.parametrize("size", [0, 1, GRANULE - 1, GRANULE, 200 * KIB])
def test_any_size_round_trips_through_a_spare(tmp_path: Path, size: int) -> None:
    store = FileStore(tmp_path, spare_budget_bytes=8 * GRANULE)
    assert store.spares is not None
    store.spares.fill(size=max(size, 1))
    data = os.urandom(size)
    store.write(f"instances/{size}.dcm", data)
    assert store.absolute(f"instances/{size}.dcm").read_bytes() == data
