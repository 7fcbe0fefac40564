"""Infer: compressed pixel data decoded in a separate, bounded process (issue 4, resources).

A crashing or hanging decoder, or a decompression bomb, must fail the job it decodes
for, never the node: each case is checked, then a normal decode must work again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage

from dicom_ai_node.errors import InferenceError
from dicom_ai_node.infer.decode import IsolatedDecoder, decode_in_process
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.testing.series import make_ct_series

from ..conftest import rss_mb

pytestmark = pytest.mark.integration

COMPRESSED = [
    "MR_small_RLE.dcm",  # RLE Lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # JPEG lossless, process 14 SV1
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, colour
]


@pytest.fixture
def decoder() -> Any:
    decoder = IsolatedDecoder(memory_mb=1024, timeout_s=20)
    yield decoder
    decoder.close()


def test_compressed_images_decode_in_the_worker_as_they_would_here(decoder: Any) -> None:
    datasets = [dcmread(get_testdata_file(name)) for name in COMPRESSED]  # type: ignore[arg-type]
    isolated = decoder.decode(datasets)
    assert decoder.pid is not None and decoder.pid != os.getpid()
    for name, here, there in zip(COMPRESSED, decode_in_process(datasets), isolated, strict=True):
        assert here.dtype == there.dtype == np.float32, name
        assert np.array_equal(here, there), name


class _Abort:
    """Unpickled in the worker, this aborts it: a real crash of the decoding process."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return os.abort, ()


class _Hang:
    """Unpickled in the worker, this sleeps: a decoder that never returns."""

    def __reduce__(self) -> tuple[Any, tuple[float]]:
        return time.sleep, (60.0,)


def _still_works(decoder: IsolatedDecoder, before: int | None) -> None:
    ds = dcmread(get_testdata_file("MR_small_RLE.dcm"))  # type: ignore[arg-type]
    assert decoder.decode([ds])[0].shape == (64, 64)
    assert decoder.pid is not None and decoder.pid != before


def test_a_crashing_decoder_fails_the_batch_not_the_node(decoder: IsolatedDecoder) -> None:
    _still_works(decoder, None)
    before = decoder.pid
    with pytest.raises(InferenceError, match=r"died \(killed by SIGABRT\)"):
        decoder.decode([_Abort()])  # type: ignore[list-item]
    _still_works(decoder, before)


def test_a_hanging_decoder_is_stopped_at_its_deadline() -> None:
    decoder = IsolatedDecoder(memory_mb=1024, timeout_s=2)
    try:
        _still_works(decoder, None)
        before = decoder.pid
        started = time.monotonic()
        with pytest.raises(InferenceError, match="longer than 2 s"):
            decoder.decode([_Hang()])  # type: ignore[list-item]
        assert time.monotonic() - started < 10
        assert before is not None and not Path(f"/proc/{before}").exists()
        _still_works(decoder, before)
    finally:
        decoder.close()


def _rle_bomb(size: int) -> Dataset:
    """An 8-bit RLE image of ``size`` x ``size`` zeros (about size**2 / 64 bytes of RLE).

    Each row is its own runs of 128 (PS3.5 G.3.1: a run may not cross a row).
    """
    full, rest = divmod(size, 128)
    row = b"\x81\x00" * full + (bytes([257 - rest, 0]) if rest else b"")
    header = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + bytes(56)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([header + row * size])
    ds["PixelData"].VR = "OB"
    return ds


def test_a_decompression_bomb_hits_the_workers_memory_bound(decoder: IsolatedDecoder) -> None:
    small = _rle_bomb(300)
    assert decoder.decode([small])[0].shape == (300, 300)
    bomb = _rle_bomb(40_000)  # 1.6 GB of pixels from 25 MB of RLE
    rss = rss_mb()
    with pytest.raises(InferenceError, match="memory"):
        decoder.decode([bomb])
    assert rss_mb() - rss < 200  # the node never held the decoded pixels
    _still_works(decoder, None)


def test_a_volume_decoded_in_the_worker_equals_one_decoded_here(decoder: IsolatedDecoder) -> None:
    _, datasets = make_ct_series(6, 64, 64, seed=2)
    for ds in datasets:
        ds.compress(RLELossless)
    here, _, issues_here = load_volume(datasets)
    there, _, issues_there = load_volume(datasets, decode=decoder.decode)
    assert here is not None and there is not None
    assert np.array_equal(here.voxels, there.voxels)
    assert issues_here == issues_there
    for ds in datasets:  # uncompressed images never go to the worker
        ds.decompress()
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert load_volume(datasets, decode=lambda batch: pytest.fail("sent to the worker"))[0]
