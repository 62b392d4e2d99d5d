import shutil
import zipfile

import nibabel as nib
import numpy as np
import pytest
from dipy.io.stateful_tractogram import Space
from dipy.io.streamline import load_tractogram

from tractvq import io
from tractvq.errors import OutputError, TractogramError


def _points(tractogram):
    return np.asarray(tractogram.streamlines.get_data())


def test_load_trk_gives_rasmm_streamlines_of_the_sample(sample_bundle):
    tractogram = io.load(sample_bundle)
    assert tractogram.space == Space.RASMM
    assert len(tractogram.streamlines) == 192
    assert set(tractogram.streamlines._lengths) == {64}


def test_load_keeps_files_that_fail_dipys_bounding_box_check(fornix):
    with pytest.raises(ValueError, match="Bounding box is not valid"):
        load_tractogram(str(fornix), "same")  # what a user meets with DIPY alone
    assert len(io.load(fornix).streamlines) == 300


def test_load_tck_with_a_reference_matches_the_same_trk(nibabel_data):
    from_tck = io.load(nibabel_data / "standard.tck", reference=nibabel_data / "standard.trk")
    from_trk = io.load(nibabel_data / "standard.trk")
    np.testing.assert_allclose(_points(from_tck), _points(from_trk), atol=1e-5)


def test_load_tck_without_reference_says_what_to_pass(nibabel_data):
    with pytest.raises(TractogramError, match=r"standard\.tck: \.tck files carry no spatial reference; pass reference="):
        io.load(nibabel_data / "standard.tck")


@pytest.mark.parametrize(
    ("name", "problem"),
    [("no_header_end.tck", "Missing END in the header"), ("no_header_end_eof.tck", "Missing END in the header"),
     ("no_magic_number.tck", "Invalid magic number")],
)
def test_broken_tck_headers_are_named(nibabel_data, name, problem):
    with pytest.raises(TractogramError, match=rf"{name}: cannot read this \.tck file \(HeaderError: {problem}"):
        io.load(nibabel_data / name, reference=nibabel_data / "standard.trk")


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(TractogramError, match=r"nothing\.trk: no such file"):
        io.load(tmp_path / "nothing.trk")
    other = tmp_path / "bundle.xyz"
    other.write_text("x")
    with pytest.raises(TractogramError, match=r"bundle\.xyz: unsupported extension '\.xyz' \(supported: \.trk, \.tck"):
        io.load(other)
    with pytest.raises(TractogramError, match="is a folder"):
        io.load(tmp_path)


@pytest.mark.parametrize("keep_bytes", [1000, 5000, -1])
def test_truncated_trk_is_an_error(tmp_path, fornix, keep_bytes):
    data = fornix.read_bytes()
    truncated = tmp_path / "truncated.trk"
    truncated.write_bytes(data[:keep_bytes])
    with pytest.raises(TractogramError, match=r"truncated\.trk: (cannot read this \.trk file|the header announces 300)"):
        io.load(truncated)


def test_garbage_trk_is_an_error(tmp_path):
    garbage = tmp_path / "garbage.trk"
    garbage.write_bytes(b"not a tractogram" * 100)
    with pytest.raises(TractogramError, match=r"garbage\.trk: cannot read this \.trk file \(HeaderError"):
        io.load(garbage)


def test_empty_files_load_with_no_streamlines(nibabel_data):
    assert len(io.load(nibabel_data / "empty.trk").streamlines) == 0
    assert len(io.load(nibabel_data / "empty.tck", reference=nibabel_data / "standard.trk").streamlines) == 0


def test_bad_references_are_named(tmp_path, nibabel_data):
    with pytest.raises(TractogramError, match=r"ref\.nii\.gz: reference file: no such file"):
        io.load(nibabel_data / "standard.tck", reference=tmp_path / "ref.nii.gz")
    with pytest.raises(TractogramError, match=r"simple\.tck: a reference must be a NIfTI image"):
        io.load(nibabel_data / "standard.tck", reference=nibabel_data / "simple.tck")


@pytest.mark.parametrize("extension", [".trk", ".tck", ".trx"])
def test_save_then_load_round_trips_in_each_format(tmp_path, sample_bundle, extension):
    tractogram = io.load(sample_bundle)
    written = io.save(tractogram, tmp_path / f"copy{extension}")
    reference = None if extension in (".trk", ".trx") else sample_bundle
    again = io.load(written, reference=reference)
    np.testing.assert_allclose(_points(again), _points(tractogram), atol=1e-4)
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"copy{extension}"]


def test_save_never_overwrites_silently(tmp_path, sample_bundle):
    tractogram = io.load(sample_bundle)
    target = tmp_path / "out.trk"
    target.write_bytes(b"precious")
    with pytest.raises(OutputError, match=r"out\.trk: already exists"):
        io.save(tractogram, target)
    assert target.read_bytes() == b"precious"
    io.save(tractogram, target, force=True)
    assert len(io.load(target).streamlines) == 192


def test_save_refuses_a_missing_folder_and_an_unknown_format(tmp_path, sample_bundle):
    tractogram = io.load(sample_bundle)
    with pytest.raises(OutputError, match="does not exist"):
        io.save(tractogram, tmp_path / "no" / "out.trk")
    with pytest.raises(TractogramError, match="unsupported extension '.txt'"):
        io.save(tractogram, tmp_path / "out.txt")
    assert list(tmp_path.iterdir()) == []


def _tractoinferno_tree(root, sample_bundle):
    for split, subject in [("trainset", "sub-1001"), ("trainset", "sub-1002"), ("validset", "sub-2001")]:
        folder = root / split / subject / "tractography"
        folder.mkdir(parents=True)
        for bundle in ("AF_L", "CC_Fr_1"):
            shutil.copy(sample_bundle, folder / f"{subject}__{bundle}.trk")
        (root / split / subject / "dti").mkdir()
        (root / split / subject / "dti" / f"{subject}__fa.nii.gz").write_bytes(b"")


def test_find_tractograms_in_a_tractoinferno_root_split_and_subject(tmp_path, sample_bundle):
    _tractoinferno_tree(tmp_path, sample_bundle)
    records = io.find_tractograms(tmp_path)
    assert [(record.subject, record.bundle) for record in records] == [
        ("sub-1001", "AF_L"), ("sub-1001", "CC_Fr_1"), ("sub-1002", "AF_L"), ("sub-1002", "CC_Fr_1"),
        ("sub-2001", "AF_L"), ("sub-2001", "CC_Fr_1"),
    ]
    assert len(io.find_tractograms(tmp_path / "trainset")) == 4
    subject = io.find_tractograms(tmp_path / "validset" / "sub-2001")
    assert [(record.subject, record.bundle) for record in subject] == [("sub-2001", "AF_L"), ("sub-2001", "CC_Fr_1")]


def test_find_tractograms_in_a_plain_folder_and_single_files(tmp_path, sample_bundle):
    shutil.copy(sample_bundle, tmp_path / "left_arcuate.trk")
    np.save(tmp_path / "MCP.npy", np.zeros((2, 3, 64), np.float32))
    (tmp_path / "notes.txt").write_text("not a tractogram")
    records = io.find_tractograms(tmp_path)
    assert [(record.subject, record.bundle) for record in records] == [
        (tmp_path.name, "MCP"), (tmp_path.name, "left_arcuate")
    ]
    single = io.find_tractograms(sample_bundle)
    assert [(record.subject, record.bundle) for record in single] == [("sub-vqdiff", "POPT_R")]


def test_find_tractograms_in_a_root_without_tractography(tmp_path):
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    with pytest.raises(TractogramError, match="no tractography found"):
        io.find_tractograms(tmp_path)
    with pytest.raises(TractogramError, match="no such file or folder"):
        io.find_tractograms(tmp_path / "missing")


def test_the_sample_subject_has_its_twelve_bundles(sample_root):
    records = io.find_tractograms(sample_root)
    assert len(records) == 12
    assert {record.subject for record in records} == {"sub-vqdiff"}
    assert "MCP" in {record.bundle for record in records}


def test_array_to_tractogram_scales_to_millimetres():
    rng = np.random.default_rng(0)
    array = rng.uniform(-1, 1, size=(5, 3, 64)).astype(np.float32)
    tractogram = io.array_to_tractogram(array, mm_per_unit=100.0)
    np.testing.assert_allclose(_points(tractogram).reshape(5, 64, 3), 100 * array.transpose(0, 2, 1), rtol=1e-6)


def test_load_array_reads_the_published_layout_and_rejects_others(tmp_path, sample_bundle):
    points = _points(io.load(sample_bundle)).reshape(-1, 64, 3)
    good = tmp_path / "POPT_R.npy"
    np.save(good, (points / 100).transpose(0, 2, 1))
    np.testing.assert_allclose(_points(io.load_array(good)).reshape(-1, 64, 3), points, atol=1e-4)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((4, 64, 3), np.float32))
    with pytest.raises(TractogramError, match=r"wrong\.npy: expected an array of shape \(N, 3, P\).*got \(4, 64, 3\)"):
        io.load_array(wrong)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(TractogramError, match=r"pickled\.npy: cannot read this \.npy file"):
        io.load_array(pickled)


def test_read_space_attributes_of_a_nifti(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 14), np.float32), affine), tmp_path / "t1.nii.gz")
    got_affine, dimensions, voxel_sizes, order = io.read_space_attributes(tmp_path / "t1.nii.gz")
    np.testing.assert_array_equal(got_affine, affine)
    assert list(dimensions) == [10, 12, 14] and list(voxel_sizes) == [2, 2, 2] and order == "RAS"


def _trx_with_groups(path, streamlines, groups, space=(np.eye(4), np.array([200, 200, 200]), np.ones(3), "RAS")):
    """A .trx file written by trx-python itself, with ``groups`` (name -> indices)."""
    from trx import trx_file_memmap

    trx = trx_file_memmap.TrxFile.from_sft(io.make_tractogram(streamlines, space))
    trx.groups = {name: np.asarray(indices, np.uint32) for name, indices in groups.items()}
    trx_file_memmap.save(trx, str(path))
    trx.close()
    return path


def _walks(count, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(12, 3)).cumsum(axis=0) + 100).astype(np.float32) for _ in range(count)]


def test_trx_groups_are_bundles_with_the_rest_as_ungrouped(tmp_path):
    walks = _walks(9)
    path = _trx_with_groups(tmp_path / "subject.trx", walks, {"B": [5, 1], "A": [0, 1, 2], "E": []})
    records = io.find_tractograms(path)
    assert [(r.subject, r.bundle, r.group) for r in records] == [
        (tmp_path.name, "A", "A"), (tmp_path.name, "B", "B"), (tmp_path.name, "E", "E"), (tmp_path.name, "ungrouped", None)
    ]
    assert [r.indices.tolist() for r in records] == [[0, 1, 2], [5, 1], [], [3, 4, 6, 7, 8]]
    for record in records:  # each bundle holds its streamlines, in the group's order
        got = io.read_record(record).streamlines
        assert len(got) == len(record.indices)
        for streamline, index in zip(got, record.indices):
            np.testing.assert_allclose(streamline, walks[index], atol=1e-4)


def test_a_trx_without_groups_stays_one_bundle_and_a_group_may_be_named_ungrouped(tmp_path):
    plain = _trx_with_groups(tmp_path / "plain.trx", _walks(3), {})
    assert [(r.bundle, r.group, r.indices) for r in io.find_tractograms(plain)] == [("plain", None, None)]
    taken = _trx_with_groups(tmp_path / "taken.trx", _walks(3), {"ungrouped": [0]})
    assert [r.bundle for r in io.find_tractograms(taken)] == ["ungrouped", "ungrouped_"]


def test_the_groups_of_one_trx_are_read_from_one_load(tmp_path, monkeypatch):
    path = _trx_with_groups(tmp_path / "subject.trx", _walks(6), {name: [index] for index, name in enumerate("ABCDEF")})
    loads, original = [], io.load
    monkeypatch.setattr(io, "load", lambda *args, **options: loads.append(args) or original(*args, **options))
    assert [len(io.read_record(record)) for record in io.find_tractograms(path)] == [1] * 6
    assert len(loads) == 1


def test_a_tractography_folder_gives_its_subject_and_any_file(tmp_path):
    folder = tmp_path / "out" / "subj-7" / "tractography"
    folder.mkdir(parents=True)
    _trx_with_groups(folder / "whole_brain.trx", _walks(2), {"AF_L": [0, 1]})
    assert [(r.subject, r.bundle) for r in io.find_tractograms(tmp_path / "out")] == [("subj-7", "AF_L")]


def _with_member(source, path, name, data):
    shutil.copy(source, path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("member", "data", "problem"),
    [
        ("groups/../x.uint32", np.array([0], np.uint32).tobytes(), r"member 'groups/\.\./x\.uint32' is not a TRX group"),
        ("groups/.uint32", np.array([0], np.uint32).tobytes(), r"member 'groups/\.uint32' is not a TRX group"),
        ("groups/sub/x.uint32", np.array([0], np.uint32).tobytes(), r"member 'groups/sub/x\.uint32' is not a TRX group"),
        ("groups/a b\x07.uint32", np.array([0], np.uint32).tobytes(), r"TRX group name 'a b\\x07' is not usable"),
        ("groups/F.float32", np.array([0], np.float32).tobytes(), r"TRX group 'F' is stored as 'float32', not as integer"),
        ("groups/P.uint32", np.array([0, 3], np.uint32).tobytes(), r"TRX group 'P' points past the file's 3 streamlines"),
        ("groups/T.uint32", np.array([1, 1], np.uint32).tobytes(), r"TRX group 'T' lists a streamline twice"),
        ("groups/A.int64", np.array([1], np.int64).tobytes(), r"TRX group 'A' appears twice"),
        ("groups/H.uint32", b"\x00\x00", r"TRX group 'H' does not hold whole indices"),
    ],
)
def test_hostile_trx_groups_are_refused_naming_the_file(tmp_path, member, data, problem):
    good = _trx_with_groups(tmp_path / "good.trx", _walks(3), {"A": [0]})
    bad = _with_member(good, tmp_path / "bad.trx", member, data)
    with pytest.raises(TractogramError, match=rf"bad\.trx: {problem}"):
        io.find_tractograms(bad)


def test_save_writes_groups_into_a_trx_only(tmp_path):
    tractogram = io.make_tractogram(_walks(4), (np.eye(4), np.array([200, 200, 200]), np.ones(3), "RAS"))
    written = io.save(tractogram, tmp_path / "out.trx", groups={"X": np.array([3, 0]), "Y": np.array([], int)})
    count, groups = io.trx_groups(written)
    assert count == 4 and {name: indices.tolist() for name, indices in groups.items()} == {"X": [3, 0], "Y": []}
    with pytest.raises(TractogramError, match=r"out\.trk: only \.trx files hold groups"):
        io.save(tractogram, tmp_path / "out.trk", groups={"X": np.array([0])})
    with pytest.raises(TractogramError, match=r"TRX group name '\.\./x' is not usable"):
        io.save(tractogram, tmp_path / "hostile.trx", groups={"../x": np.array([0])})
    assert not (tmp_path / "hostile.trx").exists() and not (tmp_path / "x.uint32").exists()
