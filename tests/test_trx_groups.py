"""TRX files with groups (pyAFQ: one file per subject, one group per bundle) through info,
encode and decode: the groups are bundles, and decoding writes them back as one .trx."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from dipy.tracking.streamline import set_number_of_points

from tractvq import io
from tractvq.cli.main import cli
from tractvq.codes import Codes
from tractvq.encoding import plan_outputs
from tractvq.errors import OutputError, TractogramError

SHARED_PYAFQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "pyafq_subject"
PYAFQ_FILE = SHARED_PYAFQ / "sub-01_ses-01_dwi_space-RASMM_model-probCSD_algo-AFQ_tractography.trx"


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def subject(tmp_path_factory, sample_root):
    """A .trx of two real sample bundles: groups POPT_R (192 streamlines), PYT_R (310, all of
    its streamlines but the last 10, which are in no group), BOTH (5 of each: overlapping) and
    EMPTY."""
    from trx import trx_file_memmap

    folder = sample_root / "sub-vqdiff" / "tractography"
    popt, pyt = (io.load(folder / f"sub-vqdiff__{name}.trk") for name in ("POPT_R", "PYT_R"))
    streamlines = list(popt.streamlines) + list(pyt.streamlines)
    first_pyt = len(popt.streamlines)
    groups = {
        "POPT_R": np.arange(first_pyt),
        "PYT_R": np.arange(first_pyt, len(streamlines) - 10),
        "BOTH": np.r_[0:5, first_pyt : first_pyt + 5],
        "EMPTY": np.array([], int),
    }
    path = tmp_path_factory.mktemp("pyafq") / "sub-01" / "sub-01_tractography.trx"
    path.parent.mkdir()
    trx = trx_file_memmap.TrxFile.from_sft(io.make_tractogram(streamlines, popt.space_attributes))
    trx.groups = {name: indices.astype(np.uint32) for name, indices in groups.items()}
    trx_file_memmap.save(trx, str(path))
    trx.close()
    return path


def _invoke(runner, *arguments):
    """The lines a command prints, progress bars left out."""
    result = runner.invoke(cli, [str(argument) for argument in arguments])
    assert result.exit_code == 0, result.output
    lines = (line.strip() for line in result.output.replace("\r", "\n").splitlines())
    return "\n".join(line for line in lines if line and "%|" not in line)


def _groups(path):
    count, groups = io.trx_groups(path)
    return count, {name: indices.tolist() for name, indices in groups.items()}


def _mean_distance(first, second):
    """Mean point distance (mm) of two tractograms' streamlines, both resampled to 64 points."""
    first, second = (np.asarray(set_number_of_points(t.streamlines, nb_points=64)) for t in (first, second))
    return float(np.linalg.norm(first - second, axis=-1).mean())


def test_info_lists_the_groups_as_bundles_with_their_counts_and_overlap(runner, subject):
    listed = json.loads(_invoke(runner, "info", "--json", subject))
    assert [(entry["bundle"], entry["group"], entry["streamlines"], entry["overlap"]) for entry in listed] == [
        ("BOTH", "BOTH", 10, 10), ("EMPTY", "EMPTY", 0, 0), ("POPT_R", "POPT_R", 192, 5),
        ("PYT_R", "PYT_R", 310, 5), ("ungrouped", None, 10, 0),
    ]
    table = _invoke(runner, "info", subject)
    assert "5 also in another group" in table
    assert table.splitlines()[-1] == "1 file(s), 5 bundle(s), 522 streamlines"


def test_encode_decode_writes_the_trx_back_with_the_same_groups(runner, subject, tmp_path):
    encoded = _invoke(runner, "encode", subject, "-o", tmp_path / "codes.npz")
    assert "5 bundle(s), 522 streamlines" in encoded
    decoded = _invoke(runner, "decode", tmp_path / "codes.npz", "-o", tmp_path / "out")
    written = tmp_path / "out" / "sub-01" / "tractography" / "sub-01_tractography.trx"
    assert decoded.splitlines() == [f"wrote {written}"]
    assert _groups(written) == _groups(subject)
    original, again = io.load(subject), io.load(written)
    np.testing.assert_array_equal(again.affine, original.affine)
    assert _mean_distance(original, again) < 4.0  # the default model: about 2 mm
    # the written folder reads back as the same subject and bundles
    records = io.find_tractograms(tmp_path / "out")
    assert [(r.subject, r.bundle, len(r.indices)) for r in records] == [
        ("sub-01", "BOTH", 10), ("sub-01", "EMPTY", 0), ("sub-01", "POPT_R", 192), ("sub-01", "PYT_R", 310),
        ("sub-01", "ungrouped", 10),
    ]


def test_a_trx_decodes_into_one_trx_file_not_into_another_format(runner, subject, tmp_path):
    _invoke(runner, "encode", subject, "-o", tmp_path / "codes.npz")
    _invoke(runner, "decode", tmp_path / "codes.npz", "-o", tmp_path / "one.trx")
    assert _groups(tmp_path / "one.trx") == _groups(subject)
    result = runner.invoke(cli, ["decode", str(tmp_path / "codes.npz"), "-o", str(tmp_path / "one.trk")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: {tmp_path / 'one.trk'}: 5 bundles cannot go into one file: give a folder or a .trx file instead"
    )
    assert not (tmp_path / "one.trk").exists()


def test_decode_says_which_data_it_drops(runner, tmp_path, sample_bundle):
    from trx import trx_file_memmap

    tractogram = io.load(sample_bundle)
    trx = trx_file_memmap.TrxFile.from_sft(tractogram)
    trx.groups = {"POPT_R": np.arange(len(tractogram), dtype=np.uint32)}
    trx.data_per_streamline = {"weight": np.ones((len(tractogram), 1), np.float32)}
    path = tmp_path / "with_data.trx"
    trx_file_memmap.save(trx, str(path))
    trx.close()
    _invoke(runner, "encode", path, "-o", tmp_path / "codes.npz")
    decoded = _invoke(runner, "decode", tmp_path / "codes.npz", "-o", tmp_path / "out.trx")
    assert decoded.splitlines()[-1] == "note: not encoded, so not written: data_per_streamline 'weight'"
    assert _groups(tmp_path / "out.trx") == (192, {"POPT_R": list(range(192))})
    with zipfile.ZipFile(tmp_path / "out.trx") as archive:
        assert not [name for name in archive.namelist() if name.startswith(("dps/", "dpv/"))]


def test_trk_and_tck_decode_into_their_own_format(runner, tmp_path, nibabel_data):
    trk, tck = nibabel_data / "standard.trk", nibabel_data / "standard.tck"
    _invoke(runner, "encode", trk, tck, "--reference", trk, "-o", tmp_path / "codes.npz")
    decoded = _invoke(runner, "decode", tmp_path / "codes.npz", "-o", tmp_path / "out")
    names = sorted(Path(line.removeprefix("wrote ")).name for line in decoded.splitlines())
    assert names == ["data__standard.tck", "data__standard.trk"]


def test_the_codes_file_validates_the_trx_groups_it_records(subject, tmp_path):
    from tractvq.encoding import encode

    encode(subject).save(tmp_path / "codes.npz")
    with np.load(tmp_path / "codes.npz", allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    description = json.loads(str(arrays["grouping"]))

    def load_with(change_description=None, base=arrays, **changed):
        edited = json.loads(json.dumps(description))
        if change_description:
            change_description(edited)
        path = tmp_path / "edited.npz"
        np.savez(path, **(base | {"grouping": np.array(json.dumps(edited))} | changed))
        return Codes.load(path)

    loaded = load_with()
    assert [source.group for source in loaded.layout.sources] == ["BOTH", "EMPTY", "POPT_R", "PYT_R", None]
    with pytest.raises(TractogramError, match=r"edited\.npz: TRX group name '\.\./x' is not usable"):
        load_with(lambda d: d["sources"][0].update(group="../x"))
    with pytest.raises(TractogramError, match=r"edited\.npz: file_indices holds 521 indices for 522 streamlines"):
        load_with(file_indices=arrays["file_indices"][:-1])
    with pytest.raises(TractogramError, match=r"bundle 'BOTH': file indices must be distinct and not negative"):
        load_with(file_indices=np.r_[-1, arrays["file_indices"][1:]])
    with pytest.raises(TractogramError, match=r"bad bundle description"):
        load_with(lambda d: d["sources"][0].update(dropped=["\x1b[2J"]))

    def version_1(edited):  # before TRX groups: whole files, nothing dropped
        for entry in edited["sources"]:
            for key in ("group", "file_indices", "dropped"):
                del entry[key]

    without_indices = {key: value for key, value in arrays.items() if key != "file_indices"}
    old = load_with(version_1, base=without_indices).layout.sources
    assert [(source.group, source.file_indices, source.dropped) for source in old] == [(None, None, ())] * 5


def test_hostile_names_in_codes_never_become_paths(subject, tmp_path):
    from tractvq.encoding import encode

    sources = encode(subject).layout.sources
    hostile = [source.__class__(**{**source.__dict__, "subject": "../..", "path": "/etc/../../passwd.trx"})
               for source in sources]
    (path,) = plan_outputs(hostile, tmp_path / "out")
    assert path == tmp_path / "out" / "_.." / "tractography" / "passwd.trx"  # one folder, inside
    with pytest.raises(OutputError, match="cannot go into one file"):
        plan_outputs(hostile, tmp_path / "out.tck")


@pytest.mark.skipif(not PYAFQ_FILE.is_file(), reason="the shared pyAFQ subject is not beside this checkout")
def test_the_pyafq_subject_round_trips_with_its_two_bundles(runner, tmp_path):
    listed = json.loads(_invoke(runner, "info", "--json", PYAFQ_FILE))
    assert [(entry["bundle"], entry["streamlines"]) for entry in listed] == [("ARC_L", 486), ("ARC_R", 22)]
    _invoke(runner, "encode", PYAFQ_FILE, "-o", tmp_path / "codes.npz")
    _invoke(runner, "decode", tmp_path / "codes.npz", "-o", tmp_path / "out")
    written = tmp_path / "out" / "pyafq_subject" / "tractography" / PYAFQ_FILE.name
    assert _groups(written) == _groups(PYAFQ_FILE)
    assert _mean_distance(io.load(PYAFQ_FILE), io.load(written)) < 8.0


def test_render_picks_a_trx_group_by_name(subject):
    from tractvq.viz.inputs import load_bundle

    shown = load_bundle(subject, bundle="POPT_R")
    assert shown.label == "POPT_R (sub-01_tractography.trx)" and len(shown.streamlines) == 192
    with pytest.raises(TractogramError, match=r"holds 5 bundles \(BOTH, EMPTY, POPT_R, PYT_R, ungrouped\): choose one"):
        load_bundle(subject)
    with pytest.raises(TractogramError, match=r"sub-01_tractography\.trx: has no bundle 'AF_L'"):
        load_bundle(subject, bundle="AF_L")
