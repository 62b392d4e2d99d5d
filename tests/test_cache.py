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
