from pathlib import Path

import numpy as np
import pytest
from dipy.tracking.distances import bundles_distances_mdf
from dipy.tracking.streamline import set_number_of_points
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tractvq import io
from tractvq.bundles import (
    PAPER_SETTINGS,
    BundleSource,
    GroupedBundles,
    GroupingSettings,
    group,
    group_streamlines,
    resample,
)
from tractvq.errors import TractogramError

REFERENCE = io.array_reference()


def _tractogram(streamlines):
    return io.make_tractogram([np.asarray(s, np.float32) for s in streamlines], REFERENCE)


def _sample_points(path):
    return resample(io.load(path), 64)


# ---------------------------------------------------------------- resampling


def test_resample_agrees_with_dipy(fornix):
    tractogram = io.load(fornix)
    expected = np.asarray(set_number_of_points(tractogram.streamlines, nb_points=64).get_data()).reshape(-1, 64, 3)
    np.testing.assert_array_equal(resample(tractogram, 64), expected)


def test_resample_keeps_streamlines_that_already_have_p_points_and_is_idempotent(fornix):
    once = resample(io.load(fornix), 32)
    twice = resample(_tractogram(once), 32)
    np.testing.assert_array_equal(twice, once)
    mixed = [once[0], np.linspace([0, 0, 0], [10, 0, 0], 7)]
    result = resample(_tractogram(mixed), 32)
    np.testing.assert_array_equal(result[0], once[0])
    np.testing.assert_allclose(result[1][:, 0], np.linspace(0, 10, 32), atol=1e-5)


@pytest.mark.parametrize(
    ("streamline", "problem"),
    [
        (np.zeros((1, 3)), r"1 streamline\(s\) have fewer than 2 points \(first at index 1\)"),
        (np.array([[0, 0, 0], [np.nan, 1, 1], [2, 2, 2]]), r"1 streamline\(s\) have non-finite coordinates \(first at index 1\)"),
        (np.array([[0, 0, 0], [np.inf, 1, 1]]), r"1 streamline\(s\) have non-finite coordinates"),
        (np.ones((4, 3)), r"1 streamline\(s\) have zero length \(all points identical\) \(first at index 1\)"),
    ],
)
def test_unusable_streamlines_are_named(streamline, problem):
    tractogram = _tractogram([np.linspace([0, 0, 0], [5, 5, 5], 10), streamline])
    with pytest.raises(TractogramError, match=rf"bad\.trk: {problem}"):
        resample(tractogram, 64, source="bad.trk")


def test_an_empty_tractogram_is_an_error(nibabel_data):
    with pytest.raises(TractogramError, match=r"empty\.trk: holds no streamlines"):
        group(io.load(nibabel_data / "empty.trk"), path=nibabel_data / "empty.trk")


# ---------------------------------------------------------------- grouping


@pytest.mark.parametrize("strategy", ["spatial", "sequential", "random"])
@pytest.mark.parametrize("normalization", ["group", "global"])
def test_identity_round_trip_through_a_trk_file(tmp_path, fornix, strategy, normalization):
    tractogram = io.load(fornix)
    expected = resample(tractogram, 64)
    grouped = group(tractogram, GroupingSettings(strategy=strategy, normalization=normalization), name="fornix")
    assert grouped.data.shape == (5, 3, 64, 64) and grouped.data.dtype == np.float32
    written = io.save(grouped.to_tractograms()[0], tmp_path / "decoded.trk")
    decoded = io.load(written)
    assert decoded.space_attributes[3] == tractogram.space_attributes[3]
    np.testing.assert_array_equal(decoded.space_attributes[0], tractogram.space_attributes[0])
    got = np.asarray(decoded.streamlines.get_data()).reshape(-1, 64, 3)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_groups_are_completed_by_repeats_with_a_mask():
    streamlines = [np.linspace([i, 0, 0], [i, 50, 10], 20) for i in range(70)]
    grouped = group(_tractogram(streamlines), GroupingSettings(group_size=64), name="x")
    assert grouped.data.shape == (2, 3, 64, 64)
    assert grouped.mask.sum() == 70
    assert sorted(grouped.streamline_index[grouped.mask]) == list(range(70))
    small = group(_tractogram(streamlines[:5]), GroupingSettings(group_size=64), name="x")
    assert small.data.shape == (1, 3, 64, 64) and small.mask.sum() == 5
    assert set(small.streamline_index[0]) == set(range(5))


def test_orientation_makes_every_group_run_one_way():
    rng = np.random.default_rng(1)
    streamlines = []
    for i in range(200):
        line = np.linspace([i % 10, 0, i // 10], [i % 10 + 5, 80, i // 10], 30) + rng.normal(0, 0.5, (30, 3))
        streamlines.append(line[::-1] if rng.random() < 0.5 else line)
    grouped = group(_tractogram(streamlines), GroupingSettings(group_size=16), name="x")
    points = grouped.denormalize()
    chords = points[:, :, -1] - points[:, :, 0]
    assert np.all(np.einsum("gsi,gti->gst", chords, chords) > 0)
    assert grouped.flipped.any() and not grouped.flipped.all()
    unoriented = group(_tractogram(streamlines), GroupingSettings(group_size=16, orient=False), name="x")
    assert not unoriented.flipped.any()


def test_spatial_groups_are_tighter_than_random_ones(sample_root):
    points = _sample_points(sample_root / "sub-vqdiff" / "tractography" / "sub-vqdiff__IFOF_L.trk")
    tractogram = _tractogram(points)

    def mean_within_group_mdf(strategy):
        grouped = group(tractogram, GroupingSettings(strategy=strategy), name="IFOF_L")
        return np.mean([bundles_distances_mdf(list(members), list(members)).mean() for members in grouped.denormalize()])

    spatial, shuffled = mean_within_group_mdf("spatial"), mean_within_group_mdf("random")
    assert spatial < 0.6 * shuffled


def test_spatial_groups_do_not_depend_on_the_file_order(sample_bundle):
    points = _sample_points(sample_bundle)
    permutation = np.random.default_rng(3).permutation(len(points))
    first = group(_tractogram(points), name="b")
    second = group(_tractogram(points[permutation]), name="b")
    np.testing.assert_allclose(second.data, first.data, atol=1e-6)
    np.testing.assert_array_equal(permutation[second.streamline_index], first.streamline_index)


def test_canonical_order_puts_similar_streamlines_next_to_each_other(sample_bundle):
    points = _sample_points(sample_bundle)
    ordered = group(_tractogram(points), GroupingSettings(strategy="sequential"), name="b").denormalize()
    unordered = group(_tractogram(points), GroupingSettings(strategy="sequential", order=False), name="b").denormalize()

    def neighbour_distance(groups):
        return np.mean(np.linalg.norm(np.diff(groups, axis=1), axis=-1))

    assert neighbour_distance(ordered) < 0.5 * neighbour_distance(unordered)


def test_random_grouping_is_seeded(sample_bundle):
    tractogram = io.load(sample_bundle)
    first = group(tractogram, GroupingSettings(strategy="random", seed=7), name="b")
    again = group(tractogram, GroupingSettings(strategy="random", seed=7), name="b")
    other = group(tractogram, GroupingSettings(strategy="random", seed=8), name="b")
    np.testing.assert_array_equal(first.streamline_index, again.streamline_index)
    assert not np.array_equal(first.streamline_index, other.streamline_index)


# ---------------------------------------------------------------- normalisation


def test_group_normalisation_fills_the_unit_box(sample_bundle):
    grouped = group(io.load(sample_bundle), name="b")
    assert np.allclose(np.abs(grouped.data).max(axis=(1, 2, 3)), 1.0)
    np.testing.assert_allclose(grouped.data.mean(axis=(2, 3)), 0, atol=1e-5)


def test_global_normalisation_is_the_published_min_max(sample_bundle):
    points = _sample_points(sample_bundle)
    grouped = group(io.load(sample_bundle), GroupingSettings(normalization="global", minimum=-120.0, maximum=80.0), name="b")
    expected = 2 * (grouped.denormalize() + 120.0) / 200.0 - 1
    np.testing.assert_allclose(grouped.data.transpose(0, 2, 3, 1), expected, atol=1e-6)
    fitted = group(io.load(sample_bundle), GroupingSettings(normalization="global"), name="b")
    assert fitted.data.min() == pytest.approx(-1) and fitted.data.max() == pytest.approx(1)
    assert fitted.offset[0, 0] == pytest.approx((points.min() + points.max()) / 2)


def test_no_normalisation_keeps_the_coordinates(sample_bundle):
    grouped = group(io.load(sample_bundle), GroupingSettings(strategy="sequential", order=False, orient=False, normalization="none"), name="b")
    np.testing.assert_array_equal(grouped.data.transpose(0, 2, 3, 1).reshape(-1, 64, 3), _sample_points(sample_bundle))


def test_paper_settings_reproduce_the_published_arrays(sample_bundle):
    """The sample .trk is 100 x the published array: groups in file order, scaled back."""
    points = _sample_points(sample_bundle)  # (192, 64, 3) mm
    grouped = group(io.load(sample_bundle), GroupingSettings(**{**PAPER_SETTINGS.__dict__, "minimum": -100.0, "maximum": 100.0}), name="b")
    published = (points / 100).transpose(0, 2, 1)  # (N, 3, 64) as the arrays are stored
    as_stored = grouped.data.transpose(0, 2, 1, 3).reshape(-1, 3, 64)
    np.testing.assert_allclose(as_stored, published, atol=1e-6)


# ---------------------------------------------------------------- settings, files


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_points": 1}, "n_points must be an integer >= 2, got 1"),
        ({"group_size": 0}, "group_size must be an integer >= 1, got 0"),
        ({"strategy": "kmeans"}, "strategy must be one of spatial, sequential, random, got 'kmeans'"),
        ({"normalization": "zscore"}, "normalization must be one of group, global, none, got 'zscore'"),
        ({"minimum": 0.0}, "give both minimum and maximum or neither"),
        ({"minimum": 1.0, "maximum": 1.0}, "minimum must be below maximum"),
    ],
)
def test_bad_settings_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        GroupingSettings(**options)


def test_groups_file_round_trip_and_concatenation(tmp_path, sample_root):
    folder = sample_root / "sub-vqdiff" / "tractography"
    parts = [group(io.load(folder / f"sub-vqdiff__{name}.trk"), name=name, subject="sub-vqdiff") for name in ("POPT_R", "PYT_R")]
    joined = GroupedBundles.concatenate(parts)
    assert len(joined) == len(parts[0]) + len(parts[1]) and joined.bundle_names == ["POPT_R", "PYT_R"]
    assert GroupedBundles.concatenate(parts[:1]) is parts[0]  # one part: no copy of its groups
    path = joined.save(tmp_path / "groups.npz")
    again = GroupedBundles.load(path)
    np.testing.assert_array_equal(again.data, joined.data)
    assert again.settings == joined.settings and again.bundle_names == joined.bundle_names
    for got, part in zip(again.to_streamlines(), parts):
        np.testing.assert_allclose(got, part.to_streamlines()[0], atol=1e-9)
    with pytest.raises(ValueError, match="cannot join groups made with"):
        GroupedBundles.concatenate([parts[0], group(io.load(folder / "sub-vqdiff__PYT_R.trk"), GroupingSettings(strategy="sequential"))])


def test_a_corrupt_groups_file_is_an_error(tmp_path, sample_bundle):
    grouped = group(io.load(sample_bundle), name="b")
    grouped.mask[0, 0] = False  # a streamline would be lost
    grouped.save(tmp_path / "bad.npz")
    with pytest.raises(TractogramError, match=r"bad\.npz: bundle 'b': not every streamline has exactly one row"):
        GroupedBundles.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(TractogramError, match=r"junk\.npz: not a tractvq groups file"):
        GroupedBundles.load(tmp_path / "junk.npz")


def test_decoding_checks_the_shape(sample_bundle):
    grouped = group(io.load(sample_bundle), name="b")
    with pytest.raises(ValueError, match=r"expected groups of shape \(3, 3, 64, 64\), got \(3, 3, 64, 32\)"):
        grouped.to_streamlines(np.zeros((3, 3, 64, 32), np.float32))


# ---------------------------------------------------------------- properties


@st.composite
def _bundles(draw):
    count = draw(st.integers(1, 90))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    streamlines = []
    for _ in range(count):
        n = int(rng.integers(2, 25))
        start = rng.uniform(-90, 90, 3)
        steps = rng.normal(0, 3, (n - 1, 3)) + rng.uniform(0.5, 2, 3)
        streamlines.append(np.vstack([start, start + np.cumsum(steps, axis=0)]))
    return streamlines


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streamlines=_bundles(),
    n_points=st.integers(2, 24),
    group_size=st.integers(1, 20),
    strategy=st.sampled_from(["spatial", "sequential", "random"]),
    normalization=st.sampled_from(["group", "global"]),
    orient=st.booleans(),
    order=st.booleans(),
)
def test_any_bundle_round_trips_exactly(streamlines, n_points, group_size, strategy, normalization, orient, order):
    tractogram = _tractogram(streamlines)
    options = GroupingSettings(n_points=n_points, group_size=group_size, strategy=strategy,
                               normalization=normalization, orient=orient, order=order)
    grouped = group(tractogram, options, name="p")
    expected = resample(tractogram, n_points)
    assert grouped.data.shape == (-(-len(streamlines) // group_size), 3, group_size, n_points)
    assert np.all(np.abs(grouped.data) <= 1 + 1e-6)
    assert np.array_equal(np.sort(grouped.streamline_index[grouped.mask]), np.arange(len(streamlines)))
    np.testing.assert_allclose(grouped.to_streamlines()[0], expected, atol=1e-4, rtol=0)


SHARED_ARRAYS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tractoinferno_subject"


@pytest.mark.skipif(not SHARED_ARRAYS.is_dir(), reason="needs ../shared (present in CI and development)")
def test_the_published_arrays_round_trip_through_the_sample_and_the_paper_settings(sample_root):
    """Every shared array equals its sample .trk / 100 and the paper's groups of it."""
    paper = GroupingSettings(**{**PAPER_SETTINGS.__dict__, "minimum": -100.0, "maximum": 100.0})
    for array_path in sorted(SHARED_ARRAYS.glob("*.npy")):
        published = np.load(array_path)  # (N, 3, 64)
        from_array = group(io.load_array(array_path), paper, name=array_path.stem)
        np.testing.assert_allclose(from_array.data.transpose(0, 2, 1, 3).reshape(published.shape), published, atol=1e-6)
        trk = sample_root / "sub-vqdiff" / "tractography" / f"sub-vqdiff__{array_path.stem}.trk"
        np.testing.assert_allclose(_sample_points(trk), 100 * published.transpose(0, 2, 1), atol=1e-4)


def test_grouping_holds_at_most_about_twice_the_groups_data(sample_root):
    import tracemalloc

    points = resample(io.load(sample_root / "sub-vqdiff" / "tractography" / "sub-vqdiff__CC_Fr_1.trk"))
    source = BundleSource("sub-vqdiff", "CC_Fr_1", "", len(points), io.array_reference())
    tracemalloc.start()
    try:
        grouped = group_streamlines(points, GroupingSettings(), source=source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.2 * grouped.data.nbytes  # the groups, one coordinate of them, small arrays
