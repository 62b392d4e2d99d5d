"""Hostile input (issue 13): corrupt codes files, tractograms, references and checkpoints
give one line naming the file, exit status 2 and no output; the API raises tractvq's errors."""

from __future__ import annotations

import json
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tractvq
from tractvq import io
from tractvq.cli.main import cli
from tractvq.codes import Codes
from tractvq.errors import ModelError, TractogramError, TractvqError
from tractvq.models.checkpoint import load_model, save_model
from tractvq.models.config import preset_config
from tractvq.training import read_run_configs


@pytest.fixture(scope="module")
def codes_files(tmp_path_factory, sample_bundle):
    folder = tmp_path_factory.mktemp("codes")
    tractvq.encode(sample_bundle).save(folder / "continuous.npz")
    tractvq.encode([sample_bundle], "discrete").save(folder / "discrete.npz")
    return folder


def _members(path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _rewrite(source, target, **changes):
    arrays = _members(source) | changes
    np.savez(target, **{key: value for key, value in arrays.items() if value is not None})
    return target


def _metadata(source, **changes) -> np.ndarray:
    metadata = json.loads(str(_members(source)["metadata"])) | changes
    return np.array(json.dumps(metadata))


def _fails_cleanly(arguments, named, output):
    result = CliRunner().invoke(cli, [str(argument) for argument in arguments])
    assert result.exit_code == 2, result.output
    stderr = result.stderr.rsplit("\r", 1)[-1]  # progress bars are another issue-13 class
    assert stderr.count("\n") == 1 and stderr.startswith("Error: ")
    assert named in stderr and "Traceback" not in stderr
    assert not output.exists()
    return stderr


def _tampered_codes(kind, codes_files, target):
    """Write a tampered copy of a codes file; returns its path."""
    continuous, discrete = codes_files / "continuous.npz", codes_files / "discrete.npz"
    members = _members(continuous)
    if kind == "truncated":
        target.write_bytes(continuous.read_bytes()[:5000])
    elif kind == "bad_crc":
        raw = bytearray(continuous.read_bytes())
        with zipfile.ZipFile(continuous) as archive:
            info = archive.getinfo("latents.npy")
        raw[info.header_offset + 200] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif kind == "huge_member":
        _rewrite(continuous, target)
        raw = target.read_bytes()
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 64, 1, 16), }"
        huge = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
        assert raw.count(header) == 1
        target.write_bytes(raw.replace(header, huge.ljust(len(header))))
    elif kind == "metadata_list":
        _rewrite(continuous, target, metadata=np.array("[1, 2]"))
    elif kind == "metadata_strings":
        _rewrite(discrete, target, metadata=_metadata(discrete, index_bits="36"))
    elif kind == "nan_latents":
        _rewrite(continuous, target, latents=np.full_like(members["latents"], np.nan))
    elif kind == "latents_float64":
        _rewrite(continuous, target, latents=members["latents"].astype(np.float64))
    elif kind == "nan_scale":
        _rewrite(continuous, target, scale=np.full_like(members["scale"], np.nan))
    elif kind == "nan_affine":
        _rewrite(continuous, target, affines=np.full_like(members["affines"], np.nan))
    elif kind == "negative_index":
        _rewrite(continuous, target, streamline_index=-members["streamline_index"])
    elif kind == "huge_index":
        _rewrite(continuous, target, streamline_index=members["streamline_index"] + 10**12)
    elif kind == "float_index":
        _rewrite(continuous, target, bundle_index=members["bundle_index"].astype(np.float64))
    elif kind == "packed_cut_short":
        _rewrite(discrete, target, packed_indices=_members(discrete)["packed_indices"][:, :100])
    elif kind == "index_bits_zero":
        _rewrite(discrete, target, metadata=_metadata(discrete, index_bits=0))
    elif kind == "index_bits_wrong":  # indices at or above the codebook size, repacked with more bits
        from tractvq.codes import pack_indices

        indices = np.full((3, 64, 1), (1 << 36) + 5, dtype=np.uint64)
        _rewrite(discrete, target, metadata=_metadata(discrete, index_bits=40), packed_indices=pack_indices(indices, 40))
    return target


CODES_CASES = [
    "truncated", "bad_crc", "huge_member", "metadata_list", "metadata_strings", "nan_latents", "latents_float64",
    "nan_scale", "nan_affine", "negative_index", "huge_index", "float_index", "packed_cut_short", "index_bits_zero",
    "index_bits_wrong",
]


@pytest.mark.parametrize("kind", CODES_CASES)
def test_tampered_codes_files_are_refused_by_decode(tmp_path, codes_files, kind):
    codes = _tampered_codes(kind, codes_files, tmp_path / f"{kind}.npz")
    _fails_cleanly(["decode", codes, "-o", tmp_path / "out"], f"{kind}.npz", tmp_path / "out")
    with pytest.raises(TractvqError, match=f"{kind}.npz"):
        tractvq.decode(Codes.load(codes))


def test_codes_without_a_model_source_name_the_codes_file(tmp_path, codes_files):
    source = codes_files / "continuous.npz"
    metadata = json.loads(str(_members(source)["metadata"]))
    metadata["model"]["source"] = ""
    codes = _rewrite(source, tmp_path / "anonymous.npz", metadata=np.array(json.dumps(metadata)))
    with pytest.raises(ModelError, match=r"anonymous\.npz: these codes do not say where their model is"):
        tractvq.decode(Codes.load(codes))


def test_the_api_takes_one_path_and_raises_its_own_errors(sample_bundle):
    assert [source.name for source in tractvq.encode(str(sample_bundle)).layout.sources] == ["POPT_R"]
    with pytest.raises(TractvqError, match="no inputs"):
        tractvq.encode([])
    with pytest.raises(ModelError, match="got a int"):
        tractvq.load_model(123)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: tractvq.encode(123), "an input is a file path (str or os.PathLike), got int 123"),
        (lambda: tractvq.encode(["ok.trk", None]), "an input is a file path (str or os.PathLike), got NoneType None"),
        (lambda: tractvq.reconstruct(4.5), "an input is a file path (str or os.PathLike), got float 4.5"),
        (lambda: tractvq.load(None), "a tractogram is a file path (str or os.PathLike), got NoneType None"),
        (lambda: Codes.load(b"x" * 100), "a codes file is a file path (str or os.PathLike), got bytes b'xxxx"),
        (lambda: tractvq.decode(7), "a codes file is a file path (str or os.PathLike), got int 7"),
    ],
)
def test_the_api_refuses_what_is_not_a_path_with_its_own_error(call, message):
    with pytest.raises(TractvqError) as raised:
        call()
    assert str(raised.value).startswith(message)


def test_decode_takes_a_codes_file(codes_files):
    from_file = tractvq.decode(codes_files / "continuous.npz")
    from_codes = tractvq.decode(Codes.load(codes_files / "continuous.npz"))
    assert [len(t.streamlines) for t in from_file] == [len(t.streamlines) for t in from_codes]
    assert np.array_equal(from_file[0].streamlines.get_data(), from_codes[0].streamlines.get_data())


# ------------------------------------------------------------------------------ tractograms
def _edited_trk(source, target, **fields):
    raw = bytearray(source.read_bytes())
    header = np.frombuffer(bytes(raw[:1000]), dtype=nib.streamlines.trk.header_2_dtype).copy()
    for name, value in fields.items():
        header[name] = value
    raw[:1000] = header.tobytes()
    target.write_bytes(bytes(raw))
    return target


def _edited_trx(source, target, *, offsets=None, positions=None):
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as edited:
        for member in original.infolist():
            data = original.read(member)
            if member.filename.startswith("offsets") and offsets is not None:
                data = offsets(np.frombuffer(data, np.int64)).astype(np.int64).tobytes()
            if member.filename.startswith("positions") and positions is not None:
                data = positions(np.frombuffer(data, np.float32)).astype(np.float32).tobytes()
            edited.writestr(member, data)
    return target


@pytest.fixture(scope="module")
def sample_trx(tmp_path_factory, sample_bundle):
    return io.save(io.load(sample_bundle), tmp_path_factory.mktemp("trx") / "bundle.trx")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("voxel_zero", "voxel sizes must be 3 positive numbers"),
        ("voxel_negative", "voxel sizes must be 3 positive numbers"),
        ("dimensions_zero", "dimensions must be 3 positive integers"),
        ("count_short", "holds more data than the 3 streamlines its header announces"),
        ("properties", "more than the file holds"),
        ("trx_offsets", "offsets must start at 0, never decrease and stay within the positions"),
        ("trx_huge", "not a tractogram in mm"),
    ],
)
def test_corrupt_tractograms_are_refused(tmp_path, sample_bundle, sample_trx, kind, message):
    edits = {
        "voxel_zero": {"voxel_sizes": (0, 1, 1)},
        "voxel_negative": {"voxel_sizes": (-1, 1, 1)},
        "dimensions_zero": {"dimensions": (0, 10, 10)},
        "count_short": {"nb_streamlines": 3},
        "properties": {"nb_properties_per_streamline": 30000},
    }
    if kind in edits:
        bad = _edited_trk(sample_bundle, tmp_path / f"{kind}.trk", **edits[kind])
    elif kind == "trx_offsets":
        bad = _edited_trx(sample_trx, tmp_path / f"{kind}.trx", offsets=lambda values: values * 10**9)
    else:
        bad = _edited_trx(sample_trx, tmp_path / f"{kind}.trx", positions=lambda values: values * 0 + 3e38)
    stderr = _fails_cleanly(["encode", bad, "-o", tmp_path / "codes.npz"], bad.name, tmp_path / "codes.npz")
    assert message in stderr
    with pytest.raises(TractogramError, match=message):
        io.load(bad)


def test_a_reference_that_is_not_a_nifti_is_one_line(tmp_path, nibabel_data):
    fake = tmp_path / "fake.nii"
    fake.write_bytes(b"not an image" * 50)
    _fails_cleanly(["info", nibabel_data / "standard.tck", "-r", fake], "fake.nii: cannot read this .nii file", tmp_path / "x")


def test_render_with_nothing_to_draw_is_an_error(tmp_path, sample_bundle):
    from tractvq.viz.inputs import load_bundle

    reference = io.load(sample_bundle).space_attributes
    empty = io.save(io.make_tractogram([], reference), tmp_path / "empty.trk")
    dots = io.save(io.make_tractogram([np.zeros((1, 3), np.float32)] * 4, reference), tmp_path / "dots.trk")
    with pytest.raises(TractogramError, match=r"empty\.trk: holds no streamlines: nothing to draw"):
        load_bundle(empty)
    with pytest.raises(TractogramError, match=r"dots\.trk: 4 streamline\(s\) have fewer than two points"):
        load_bundle(dots)


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from tractvq.models.checkpoint import build_model

    path = tmp_path_factory.mktemp("model") / "model.pt"
    return save_model(build_model(preset_config("compact")), path)


def _tampered_checkpoint(model_file, target, kind):
    payload = torch.load(model_file, weights_only=True)
    key = next(iter(payload["state_dict"]))
    if kind == "huge_config":
        payload["config"]["channels"] = [10**8]
    elif kind == "sparse":
        payload["state_dict"][key] = payload["state_dict"][key].to_sparse()
    elif kind == "flipped_byte":  # the recorded checksum no longer matches
        payload["state_dict"][key].view(-1)[0] += 1.0
    elif kind == "nan_weight":
        del payload["weights_sha256"]
        payload["state_dict"][key].view(-1)[0] = float("nan")
    torch.save(payload, target)
    return target


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("huge_config", "channels must be at most 65,536"),
        ("sparse", "expected a dense tensor"),
        ("flipped_byte", "weights checksum does not match: the file is damaged"),
        ("nan_weight", "non-finite values"),
    ],
)
def test_checkpoints_are_checked_before_use(tmp_path, model_file, kind, message):
    bad = _tampered_checkpoint(model_file, tmp_path / f"{kind}.pt", kind)
    with pytest.raises(ModelError, match=f"{kind}.pt: .*{message}"):
        load_model(bad)
    assert load_model(model_file) is not None


@pytest.mark.parametrize("kind", ["model_file", "state_dict", "garbage_keys"])
def test_resume_refuses_what_is_not_a_training_checkpoint(tmp_path, model_file, kind):
    run = tmp_path / "run"
    run.mkdir()
    payload = torch.load(model_file, weights_only=True)
    if kind == "state_dict":
        payload = payload["state_dict"]
    elif kind == "garbage_keys":
        payload = {"format": "tractvq-training-checkpoint", "format_version": 1, "step": "x", "model": 3}
    torch.save(payload, run / "checkpoint.pt")
    with pytest.raises(ModelError, match=r"checkpoint\.pt: "):
        read_run_configs(run)


def test_formats_dipy_cannot_handle_here_are_one_line_errors(tmp_path, sample_bundle):
    """A .vtk file: DIPY's VTK reader and writer need optional packages (fury <= 1.0): when
    they are missing or of another version, reading and writing say so in one line."""
    from dipy.io.vtk import have_fury

    garbage = tmp_path / "garbage.vtk"
    garbage.write_text("# vtk DataFile Version 3.0\nnot a polydata\n")
    _fails_cleanly(["encode", garbage, "--reference", sample_bundle, "-o", tmp_path / "codes.npz"], "garbage.vtk",
                   tmp_path / "codes.npz")
    if not have_fury:  # DIPY's VTK writer is a tripwire here (the viz extra pins fury 2.0)
        stderr = _fails_cleanly(["reconstruct", sample_bundle, "-o", tmp_path / "recon.vtk"], "recon.vtk",
                                tmp_path / "recon.vtk")
        assert "cannot write .vtk files here" in stderr
        assert sorted(path.name for path in tmp_path.iterdir()) == ["garbage.vtk"]  # no temporary left


@pytest.mark.parametrize("kind", ["huge_labels", "truncated_groups", "object_labels", "labels_out_of_range"])
def test_tampered_caches_are_one_line_errors_before_any_allocation(tmp_path, sample_bundle, kind):
    from tractvq.cache import prepare

    cache = prepare([sample_bundle], tmp_path / "cache", progress=False)
    labels, groups = cache / "labels.npz", cache / "groups.npz"
    if kind == "huge_labels":
        with zipfile.ZipFile(labels) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        header = b"'shape': (3,), }"
        huge = b"'shape': (10000000000000,), }"
        padded = header + b" " * (len(huge) - len(header))  # the header's padding takes the longer shape
        assert members["subject.npy"].count(padded) == 1
        members["subject.npy"] = members["subject.npy"].replace(padded, huge)  # a valid CRC: only the header lies
        with zipfile.ZipFile(labels, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        message = "labels.npz: member 'subject.npy' announces an array of shape (10000000000000,) that it does not hold"
    elif kind == "truncated_groups":
        groups.write_bytes(groups.read_bytes()[:4000])
        message = "groups.npz: not a tractvq groups file or damaged"
    elif kind == "labels_out_of_range":
        members = dict(np.load(labels))
        with open(labels, "wb") as handle:
            np.savez(handle, **(members | {"bundle": members["bundle"] + 5}))
        message = "labels.npz: 'bundle' labels fall outside the manifest's 1 names"
    else:
        members = dict(np.load(labels))
        with open(labels, "wb") as handle:
            np.savez(handle, subject=np.array([object()] * 3, dtype=object), bundle=members["bundle"],
                     validation=members["validation"])
        message = "labels.npz: member 'subject.npy' holds Python objects; refused"
    result = CliRunner().invoke(cli, ["train", str(cache), "-o", str(tmp_path / "run"), "-q", "--steps", "1"])
    assert result.exit_code == 2, result.output
    stderr = result.stderr.rsplit("\r", 1)[-1]
    assert stderr.count("\n") == 1 and stderr.startswith("Error: ") and message in stderr
    assert not (tmp_path / "run").exists()


def test_trk_size_check_counts_beyond_two_gibibytes(monkeypatch, sample_bundle):
    """The .trk header stores its size as int32: the check must add Python integers (a
    9 GiB whole-brain file raised OverflowError)."""
    monkeypatch.setattr(io, "_trk_data_size", lambda count, points, header: 9_712_363_600)
    with pytest.raises(TractogramError, match="holds more data than the"):
        io.load(sample_bundle)
    monkeypatch.setattr(io, "_trk_data_size", lambda count, points, header: sample_bundle.stat().st_size - 1000)
    assert len(io.load(sample_bundle).streamlines) > 0
