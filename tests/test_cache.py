import json
import shutil

import numpy as np
import pytest

from tractvq.bundles import GroupingSettings
from tractvq.cache import load_cache, prepare, split_groups
from tractvq.errors import OutputError, TractogramError


@pytest.fixture(scope="module")
def sample_cache(tmp_path_factory, sample_root):
    return prepare([sample_root], tmp_path_factory.mktemp("cache") / "cache", progress=False)


def test_prepare_writes_every_group_with_labels_and_a_split(sample_cache):
    cache = load_cache(sample_cache)
    assert len(cache.groups) == 194  # sum of ceil(N_b / 64) over the 12 bundles
    assert cache.groups.data.shape == (194, 3, 64, 64)
    assert cache.subject_names == ["sub-vqdiff"] and len(cache.bundle_names) == 12
    assert cache.manifest["split"]["unit"] == "group"
    assert cache.validation.sum() == 19
    assert len(cache.split("train")) + len(cache.split("validation")) == 194
    mcp = cache.bundle_names.index("MCP")
    assert (cache.bundle_labels == mcp).sum() == 27
    assert cache.manifest["streamlines"] == 12416
    assert sorted(path.name for path in sample_cache.iterdir()) == ["groups.npz", "labels.npz", "manifest.json"]


def test_the_split_is_seeded(sample_root, tmp_path):
    first = load_cache(prepare([sample_root], tmp_path / "a", seed=1, progress=False)).validation
    again = load_cache(prepare([sample_root], tmp_path / "b", seed=1, progress=False)).validation
    other = load_cache(prepare([sample_root], tmp_path / "c", seed=2, progress=False)).validation
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_several_subjects_are_split_by_subject(tmp_path, sample_root):
    bundles = sorted((sample_root / "sub-vqdiff" / "tractography").glob("*POPT*.trk"))
    for subject in ("sub-01", "sub-02", "sub-03", "sub-04"):
        folder = tmp_path / "data" / "trainset" / subject / "tractography"
        folder.mkdir(parents=True)
        for bundle in bundles:
            shutil.copy(bundle, folder / f"{subject}__{bundle.name.split('__')[1]}")
    cache = load_cache(prepare([tmp_path / "data"], tmp_path / "cache", validation_fraction=0.25, progress=False))
    assert cache.manifest["split"]["unit"] == "subject"
    held_out = {cache.subject_names[label] for label in cache.subject_labels[cache.validation]}
    kept = {cache.subject_names[label] for label in cache.subject_labels[~cache.validation]}
    assert len(held_out) == 1 and len(kept) == 3 and not held_out & kept


def test_global_normalisation_uses_one_range_for_all_sources(sample_root, tmp_path):
    cache = load_cache(prepare([sample_root], tmp_path / "cache", GroupingSettings(normalization="global"), progress=False))
    assert cache.settings.minimum is not None
    assert np.unique(cache.groups.scale).size == 1
    assert cache.groups.data.min() == pytest.approx(-1) and cache.groups.data.max() == pytest.approx(1)
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["settings"]["minimum"] == cache.settings.minimum


def test_prepare_never_overwrites_and_leaves_nothing_on_failure(sample_root, sample_cache, tmp_path, nibabel_data):
    with pytest.raises(OutputError, match="already exists"):
        prepare([sample_root], sample_cache, progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(nibabel_data / "empty.trk", broken / "empty.trk")
    with pytest.raises(TractogramError, match=r"empty\.trk: holds no streamlines"):
        prepare([broken], tmp_path / "out", progress=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["broken"]


def test_split_groups_validates_the_fraction():
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\), got 1.5"):
        split_groups(np.zeros(10, int), 1.5, 0)
    validation, unit = split_groups(np.zeros(10, int), 0.0, 0)
    assert unit == "group" and not validation.any()


def test_load_cache_names_a_folder_that_is_not_a_cache(tmp_path):
    with pytest.raises(TractogramError, match="not a tractvq cache"):
        load_cache(tmp_path)


def _tractography(sample_root):
    return sample_root / "sub-vqdiff" / "tractography"


def test_max_streamlines_per_bundle_takes_a_seeded_subset_of_each_large_bundle(sample_root, tmp_path):
    from tractvq.bundles import resample
    from tractvq.io import load

    sources = [_tractography(sample_root) / f"sub-vqdiff__{name}.trk" for name in ("POPT_R", "ILF_R", "PYT_R")]
    settings = GroupingSettings(n_points=16, group_size=16)
    path = prepare(sources, tmp_path / "a", settings, max_streamlines_per_bundle=200, progress=False)
    cache = load_cache(path)
    assert cache.manifest["max_streamlines_per_bundle"] == 200
    assert [(s["bundle"], s["streamlines"], s["streamlines_read"]) for s in cache.manifest["sources"]] == [
        ("POPT_R", 192, 192), ("ILF_R", 200, 256), ("PYT_R", 200, 320)
    ]
    # the bundles weigh (almost) alike: 12, 13 and 13 groups instead of 12, 16 and 20
    assert np.bincount(cache.bundle_labels).tolist() == [13, 12, 13]  # ILF_R, POPT_R, PYT_R
    # the kept streamlines are real ones, at the file indices the groups record
    pyt = cache.groups.sources[2]
    assert len(pyt.file_indices) == 200 and np.all(np.diff(pyt.file_indices) > 0)
    original = resample(load(sources[2]), 16)[pyt.file_indices]  # (200, 16, 3) mm
    stored = cache.groups.denormalize()  # (G, S, P, 3)
    members = cache.groups.bundle_index == 2
    rows = cache.groups.streamline_index[members][cache.groups.mask[members]]
    flipped = cache.groups.flipped[members][cache.groups.mask[members]]
    streamlines = stored[members][cache.groups.mask[members]]
    streamlines[flipped] = streamlines[flipped][:, ::-1]
    np.testing.assert_allclose(streamlines, original[rows], atol=1e-3)
    # seeded: the same subset again, another with another seed; none without the cap
    again = load_cache(prepare(sources, tmp_path / "b", settings, max_streamlines_per_bundle=200, progress=False))
    other = load_cache(
        prepare(sources, tmp_path / "c", settings, max_streamlines_per_bundle=200, seed=1, progress=False)
    )
    assert np.array_equal(again.groups.sources[2].file_indices, pyt.file_indices)
    assert not np.array_equal(other.groups.sources[2].file_indices, pyt.file_indices)
    whole = load_cache(prepare(sources, tmp_path / "d", settings, progress=False))
    assert whole.manifest["max_streamlines_per_bundle"] is None and whole.groups.sources[2].file_indices is None


@pytest.fixture(scope="module")
def three_subjects(tmp_path_factory, sample_root):
    root = tmp_path_factory.mktemp("subjects") / "data"
    for subject in ("sub-01", "sub-02", "sub-03"):
        folder = root / subject / "tractography"
        folder.mkdir(parents=True)
        for name in ("POPT_R", "PYT_R"):
            shutil.copy(_tractography(sample_root) / f"sub-vqdiff__{name}.trk", folder / f"{subject}__{name}.trk")
    return root


def test_validation_subjects_are_held_out_whole(three_subjects, tmp_path):
    settings = GroupingSettings(n_points=16, group_size=32)
    cache = load_cache(prepare([three_subjects], tmp_path / "cache", settings, validation_subjects=["sub-02"],
                               holdout_bundles=["PYT_R"], progress=False))
    subjects = np.array(cache.subject_names)[cache.subject_labels]
    bundles = np.array(cache.bundle_names)[cache.bundle_labels]
    np.testing.assert_array_equal(cache.validation, (subjects == "sub-02") | (bundles == "PYT_R"))
    assert cache.manifest["split"] == {"unit": "subject", "validation_fraction": None, "seed": 0,
                                       "holdout_bundles": ["PYT_R"], "validation_subjects": ["sub-02"]}
    with pytest.raises(ValueError, match=r"cannot hold out subject\(s\) sub-9: not among the sources' subjects "
                                         r"\(sub-01, sub-02, sub-03\)"):
        prepare([three_subjects], tmp_path / "x", validation_subjects=["sub-9"], progress=False)
    with pytest.raises(ValueError, match="cannot hold out every subject .*: none would be left for training"):
        prepare([three_subjects], tmp_path / "x", validation_subjects=["sub-01", "sub-02", "sub-03"], progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--validation-subject", "sub-9"],
         "no subject 'sub-9' among the sources; their subjects are: sub-01, sub-02, sub-03"),
        (["--validation-subject", "sub-01", "--validation-fraction", "0.2"],
         "give --validation-fraction or --validation-subject, not both"),
        (["--validation-subject", "sub-01", "--validation-subject", "sub-02", "--validation-subject", "sub-03"],
         "cannot hold out every subject"),
        (["--max-streamlines-per-bundle", "0"],
         "Invalid value for '--max-streamlines-per-bundle': 0 is not in the range x>=1."),
    ],
)
def test_prepare_command_checks_the_split_options(three_subjects, tmp_path, arguments, message):
    from click.testing import CliRunner

    from tractvq.cli.main import cli

    result = CliRunner().invoke(cli, ["prepare", str(three_subjects), "-o", str(tmp_path / "cache"), *arguments])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cache").exists()


def test_prepare_command_holds_out_named_subjects_and_caps_bundles(three_subjects, tmp_path):
    from click.testing import CliRunner

    from tractvq.cli.main import cli

    result = CliRunner().invoke(cli, [
        "prepare", str(three_subjects), "-o", str(tmp_path / "cache"), "--points", "16", "--group-size", "32",
        "--validation-subject", "sub-03", "--max-streamlines-per-bundle", "100",
    ])
    assert result.exit_code == 0, result.output
    cache = load_cache(tmp_path / "cache")
    assert cache.manifest["split"]["validation_subjects"] == ["sub-03"]
    assert {s["streamlines"] for s in cache.manifest["sources"]} == {100}
    assert np.array_equal(cache.validation, cache.subject_labels == cache.subject_names.index("sub-03"))
