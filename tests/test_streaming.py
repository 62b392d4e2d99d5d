"""Reading .trk and .tck files chunk by chunk (io.stream, bundles.group_stream): the same
streamlines, groups and errors as loading them whole, without the whole file in memory."""

from __future__ import annotations

import numpy as np
import pytest

import tractvq
from tractvq import bundles, io
from tractvq.errors import TractogramError


@pytest.fixture(scope="module")
def tck_and_reference(tmp_path_factory, sample_bundle):
    folder = tmp_path_factory.mktemp("tck")
    return io.save(io.load(sample_bundle), folder / "bundle.tck"), sample_bundle


def _concatenated(chunks):
    return [streamline for chunk in chunks for streamline in chunk]


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_chunks_hold_the_streamlines_load_gives(sample_bundle, tck_and_reference, size):
    for path, reference in ((sample_bundle, None), tck_and_reference):
        whole = io.load(path, reference)
        streamed = io.stream(path, reference)
        chunks = list(streamed.chunks(size))
        assert all(len(chunk) <= size for chunk in chunks)
        assert len(chunks) == -(-len(whole.streamlines) // size)
        for ours, theirs in zip(_concatenated(chunks), whole.streamlines, strict=True):
            assert np.array_equal(ours, theirs)
        for ours, theirs in zip(streamed.space_attributes, whole.space_attributes, strict=True):
            assert np.array_equal(ours, theirs)


def test_group_stream_equals_group_of_the_whole_file(sample_bundle, monkeypatch):
    settings = bundles.GroupingSettings()
    whole = bundles.group(io.load(sample_bundle), settings, subject="s", name="b", path=sample_bundle)
    monkeypatch.setattr(io, "STREAM_CHUNK", 50)  # several chunks
    streamed = bundles.group_stream(io.stream(sample_bundle), settings, subject="s", name="b")
    assert np.array_equal(streamed.data, whole.data)
    for name in ("streamline_index", "mask", "flipped", "offset", "scale", "bundle_index"):
        assert np.array_equal(getattr(streamed, name), getattr(whole, name)), name
    assert streamed.sources[0].n_streamlines == whole.sources[0].n_streamlines == 192
    assert streamed.sources[0].path == whole.sources[0].path


def test_encode_reads_trk_and_tck_files_without_loading_them_whole(sample_bundle, tck_and_reference, monkeypatch):
    expected = tractvq.encode(sample_bundle)
    monkeypatch.setattr(io, "load", lambda *args, **kwargs: pytest.fail("loaded whole"))
    assert np.array_equal(tractvq.encode(sample_bundle).latents, expected.latents)
    tck, reference = tck_and_reference
    assert np.allclose(tractvq.encode(tck, reference=reference).latents, expected.latents, atol=1e-5)


def _write(path, streamlines, sample_bundle):
    return io.save(io.make_tractogram(streamlines, io.load(sample_bundle).space_attributes), path)


def test_a_bad_streamline_in_a_later_chunk_is_named_by_its_index_in_the_file(tmp_path, sample_bundle):
    streamlines = [np.array([[0, 0, i], [0, 1, i], [0, 2, i]], np.float32) for i in range(10)]
    streamlines[7] = np.zeros((3, 3), np.float32)  # zero length
    path = _write(tmp_path / "bad.trk", streamlines, sample_bundle)
    stream = io.stream(path)
    with pytest.raises(TractogramError, match=r"bad\.trk: 1 streamline\(s\) have zero length .*first at index 7"):
        bundles.resample_stream(stream, 64)
    with pytest.raises(TractogramError, match=r"first at index 7"):
        bundles.resample(io.load(path), 64, source=path)


def test_non_finite_coordinates_in_a_chunk_are_refused(tmp_path, sample_bundle):
    streamlines = [np.array([[0, 0, i], [0, 1, i]], np.float32) for i in range(6)]
    streamlines[4] = np.array([[0, 0, 0], [np.nan, 1, 1]], np.float32)
    path = _write(tmp_path / "nan.tck", streamlines, sample_bundle)
    with pytest.raises(TractogramError, match=r"nan\.tck: holds non-finite coordinates"):
        list(io.stream(path, sample_bundle).chunks(2))


def test_a_truncated_file_is_refused_after_the_last_chunk(tmp_path, sample_bundle):
    truncated = tmp_path / "truncated.trk"
    raw = sample_bundle.read_bytes()
    truncated.write_bytes(raw[: len(raw) - 3000])
    with pytest.raises(TractogramError, match=r"truncated\.trk: .*(announces|cannot read)"):
        bundles.resample_stream(io.stream(truncated), 64)


def test_what_is_not_streamed_is_refused_by_stream(tmp_path, sample_bundle, tck_and_reference):
    trx = io.save(io.load(sample_bundle), tmp_path / "bundle.trx")
    assert not io.streams(trx) and not io.streams(sample_bundle, sample_bundle)
    assert io.streams(sample_bundle) and io.streams(tck_and_reference[0], sample_bundle)
    with pytest.raises(TractogramError, match="only .tck files, and .trk files without a reference"):
        io.stream(trx)
    with pytest.raises(TractogramError, match=r"\.tck files carry no spatial reference"):
        io.stream(tck_and_reference[0])


def test_an_empty_file_holds_no_streamlines(tmp_path, sample_bundle):
    path = _write(tmp_path / "empty.trk", [], sample_bundle)
    with pytest.raises(TractogramError, match=r"empty\.trk: holds no streamlines"):
        bundles.resample_stream(io.stream(path), 64)


@pytest.mark.parametrize(
    "name", ["standard.trk", "standard.LPS.trk", "complex.trk", "complex_big_endian.trk", "simple.trk",
             "standard.tck", "simple_big_endian.tck", "multiline_header_field.tck"]
)
def test_nibabel_files_stream_as_they_load(nibabel_data, name):
    """Voxel orders, endianness, scalars and properties, .tck headers: bit-identical to
    DIPY's whole load, and the same data reported as dropped."""
    path = nibabel_data / name
    reference = None if name.endswith(".trk") else nibabel_data / "standard.nii.gz"
    whole = io.load(path, reference)
    streamed = io.stream(path, reference)
    for ours, theirs in zip(_concatenated(streamed.chunks(3)), whole.streamlines, strict=True):
        assert ours.dtype == np.float32 and np.array_equal(ours, theirs)
    expected = tuple(f"{kind} {key!r}" for kind, data in (("data_per_point", whole.data_per_point),
                     ("data_per_streamline", whole.data_per_streamline)) for key in sorted(data))
    assert streamed.dropped == expected


def test_reading_ahead_gives_the_same_chunks_and_stops_with_the_caller(sample_bundle):
    import threading
    import time

    stream = io.stream(sample_bundle)
    ahead, plain = list(stream.chunks(10)), list(stream.chunks(10, read_ahead=False))
    assert len(ahead) == len(plain) == 20
    assert all(np.array_equal(a._data, b._data) for a, b in zip(ahead, plain, strict=True))
    chunks = stream.chunks(1)
    next(chunks)
    chunks.close()  # the caller stops early: the helper must not stay blocked
    deadline = time.monotonic() + 5
    while any(thread.name == "tractvq-read-ahead" for thread in threading.enumerate()):
        assert time.monotonic() < deadline, "the read-ahead thread outlived its caller"
        time.sleep(0.05)
