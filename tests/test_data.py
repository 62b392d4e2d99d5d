import numpy as np
import pytest
import torch

from tractvq.bundles import PAPER_SETTINGS, GroupingSettings, group
from tractvq.data import Augmentation, GroupDataset, StepSampler
from tractvq.io import load
from tractvq.metrics import pairwise_mdf


@pytest.fixture(scope="module")
def tractogram(sample_bundle):
    return load(sample_bundle)


@pytest.fixture(scope="module")
def groups(tractogram):
    return group(tractogram, GroupingSettings(n_points=16, group_size=16))


def test_sampler_is_a_function_of_seed_and_step():
    first, second = StepSampler(10, 4, seed=3), StepSampler(10, 4, seed=3)
    steps = [first.indices(step) for step in range(10)]
    assert [list(second.indices(step)) for step in reversed(range(10))] == [list(s) for s in reversed(steps)]
    stream = np.concatenate(steps)  # 40 positions = 4 epochs of 10
    for epoch in range(4):
        assert sorted(stream[epoch * 10 : (epoch + 1) * 10]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    assert not np.array_equal(StepSampler(10, 4, seed=4).indices(0), steps[0])


def test_sampler_shards_the_global_batch_across_ranks():
    whole = StepSampler(7, 6, seed=0)
    shards = [StepSampler(7, 6, seed=0, rank=rank, world_size=3) for rank in range(3)]
    for step in range(5):
        assert np.array_equal(np.concatenate([shard.indices(step) for shard in shards]), whole.indices(step))
        assert np.array_equal(np.concatenate([shard.positions(step) for shard in shards]), whole.positions(step))


def test_batch_larger_than_the_data_repeats_groups():
    indices = StepSampler(3, 8, seed=0).indices(0)
    assert len(indices) == 8 and set(indices) == {0, 1, 2}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_items": 0, "batch_size": 2}, "n_items must be >= 1, got 0"),
        ({"n_items": 5, "batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"n_items": 5, "batch_size": 5, "world_size": 2}, "divisible by the number of processes, got 5 for 2"),
        ({"n_items": 5, "batch_size": 4, "rank": 2, "world_size": 2}, "got rank 2 of 2"),
    ],
)
def test_sampler_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        StepSampler(**arguments, seed=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rotation_degrees": -1}, "rotation_degrees must be in"),
        ({"translation_mm": float("inf")}, "translation_mm must be finite"),
        ({"streamline_dropout": 1.0}, r"streamline_dropout must be in \[0, 1\), got 1.0"),
    ],
)
def test_augmentation_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(**options)


def test_without_augmentation_batches_are_the_stored_groups(groups):
    dataset = GroupDataset(groups, seed=0)
    assert len(dataset) == len(groups) and torch.equal(dataset[1], torch.from_numpy(groups.data[1]))
    batch = dataset.batch(np.array([2, 0, 2]), keys=np.arange(3))
    assert batch.shape == (3, *groups.data.shape[1:])
    assert torch.equal(batch, torch.from_numpy(groups.data[[2, 0, 2]]))


def test_augmentation_is_seeded_per_key(groups):
    augmentation = Augmentation(rotation_degrees=5, streamline_dropout=0.3)
    dataset = GroupDataset(groups, augmentation, seed=1)
    first = dataset.batch(np.array([0, 1, 2]), keys=np.array([10, 11, 12]))
    again = GroupDataset(groups, augmentation, seed=1).batch(np.array([1, 2]), keys=np.array([11, 12]))
    assert torch.equal(first[1:], again)
    assert not torch.equal(dataset.batch(np.array([0]), keys=np.array([13])), first[:1])
    assert not torch.equal(GroupDataset(groups, augmentation, seed=2).batch(np.array([0]), keys=np.array([10])), first[:1])
    assert torch.equal(dataset.batch(np.array([0, 1])), torch.from_numpy(groups.data[:2]))  # no keys: as stored


def _source_rows(augmented, stored):
    """For each row of ``augmented`` (3, S, P), the row of ``stored`` it is an exact copy of."""
    return [
        next(other for other in range(stored.shape[1]) if np.array_equal(augmented[:, row], stored[:, other]))
        for row in range(augmented.shape[1])
    ]


def test_dropout_repeats_real_rows_in_order(tractogram):
    # global normalisation: no renormalisation, so kept and repeated rows are exact copies
    settings = GroupingSettings(**{**PAPER_SETTINGS.__dict__, "n_points": 16, "group_size": 16})
    fixed = group(tractogram, settings)
    dropout = Augmentation(streamline_dropout=0.5)
    keys = np.arange(len(fixed)) + 100
    batch = GroupDataset(fixed, dropout, seed=0).batch(np.arange(len(fixed)), keys=keys).numpy()
    sources = []
    for index in range(len(fixed)):
        rows = _source_rows(batch[index], fixed.data[index])
        assert rows == sorted(rows) and 1 <= len(set(rows)) < len(rows)  # in order, some dropped
        assert all(rows[row] == row for row in set(rows))  # kept rows stay in place
        sources.append(rows)
    # per-group normalisation: the same rows (same seeds), renormalised as the cache does
    same_shape = group(tractogram, GroupingSettings(n_points=16, group_size=16))
    renormalised = GroupDataset(same_shape, dropout, seed=0).batch(np.arange(len(same_shape)), keys=keys).numpy()
    stored_mm = same_shape.denormalize().transpose(0, 3, 1, 2)  # (G, 3, S, P)
    for index, rows in enumerate(sources[: len(same_shape)]):
        points = stored_mm[index][:, rows]  # (3, S, P)
        centre = points.mean(axis=(1, 2), keepdims=True)
        expected = (points - centre) / np.abs(points - centre).max()
        np.testing.assert_allclose(renormalised[index], expected, atol=1e-5)


def test_rotation_is_rigid_in_millimetres(groups):
    rotation = Augmentation(rotation_degrees=10)
    dataset = GroupDataset(groups, rotation, seed=0)
    batch = dataset.batch(np.arange(len(groups)), keys=np.arange(len(groups))).numpy()
    stored = groups.denormalize()  # (G, S, P, 3)
    for index in range(len(groups)):
        # undo the per-group normalisation of the augmented group: its scale is unknown, but
        # a rigid map keeps distances, so pairwise point distances scale by one factor
        points = batch[index].transpose(1, 2, 0).reshape(-1, 3)
        original = stored[index].reshape(-1, 3)
        ratios = np.linalg.norm(points[1:] - points[:-1], axis=1) / np.linalg.norm(original[1:] - original[:-1], axis=1)
        assert np.allclose(ratios, ratios[0], rtol=1e-4)
        assert np.abs(batch[index]).max() == pytest.approx(1.0, abs=1e-6)  # renormalised
        assert not np.allclose(batch[index], groups.data[index], atol=1e-3)


@pytest.mark.parametrize("normalization", ["global", "none"])
def test_rigid_transform_with_fixed_normalisation_stays_in_millimetres(tractogram, normalization):
    settings = GroupingSettings(**{**PAPER_SETTINGS.__dict__, "n_points": 16, "group_size": 16, "normalization": normalization})
    groups = group(tractogram, settings)
    dataset = GroupDataset(groups, Augmentation(rotation_degrees=3, translation_mm=2), seed=5)
    batch = dataset.batch(np.arange(len(groups)), keys=np.arange(len(groups))).numpy()
    augmented_mm = groups.denormalize(batch)  # the fixed global range maps back to mm
    stored_mm = groups.denormalize()
    distances = pairwise_mdf(stored_mm, augmented_mm)  # (G, S) mm
    assert 0 < distances.max() < 2 * np.sqrt(3) + np.deg2rad(3) * 100  # small rigid motion
    for index in range(len(groups)):
        a, b = stored_mm[index].reshape(-1, 3), augmented_mm[index].reshape(-1, 3)
        np.testing.assert_allclose(np.linalg.norm(a[1:] - a[:-1], axis=1), np.linalg.norm(b[1:] - b[:-1], axis=1), atol=1e-3)


@pytest.fixture(scope="module")
def in_mm(tractogram):
    """Groups stored in millimetres (normalisation "none"): an augmented batch is in mm too."""
    return group(tractogram, GroupingSettings(n_points=16, group_size=16, normalization="none"))


def _augmented(groups, seed=0, **options):
    everything = np.arange(len(groups))
    return GroupDataset(groups, Augmentation(**options), seed=seed).batch(everything, keys=everything + 7).numpy()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scaling": 1.0}, r"scaling must be in \[0, 1\), got 1.0"),
        ({"shear": -0.1}, r"shear must be in \[0, 1\), got -0.1"),
        ({"elastic_mm": float("nan")}, "elastic_mm must be finite and >= 0, got nan"),
        ({"jitter_mm": float("inf")}, "jitter_mm must be finite and >= 0, got inf"),
        ({"resampling": 1.5}, r"resampling must be in \[0, 1\], got 1.5"),
        ({"partial_groups": -1}, r"partial_groups must be in \[0, 1\], got -1"),
        ({"mixed_groups": 2}, r"mixed_groups must be in \[0, 1\], got 2"),
    ],
)
def test_new_augmentation_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(**options)


def test_every_option_is_off_by_default():
    defaults = Augmentation().to_dict()
    assert set(defaults) == {
        "rotation_degrees", "translation_mm", "streamline_dropout", "scaling", "shear", "elastic_mm", "jitter_mm",
        "resampling", "partial_groups", "mixed_groups",
    }
    assert not any(defaults.values()) and not Augmentation().enabled
    assert all(Augmentation(**{name: 0.5}).enabled for name in defaults)


def test_jitter_is_gaussian_noise_of_the_given_standard_deviation(in_mm):
    noise = _augmented(in_mm, jitter_mm=0.5) - in_mm.data
    assert noise.std() == pytest.approx(0.5, rel=0.03) and abs(noise.mean()) < 0.02
    assert abs(np.corrcoef(noise[..., 1:].ravel(), noise[..., :-1].ravel())[0, 1]) < 0.05  # independent points


def test_elastic_warp_is_smooth_and_as_large_as_asked(in_mm):
    displacement = _augmented(in_mm, elastic_mm=2) - in_mm.data  # (G, 3, S, P) mm
    lengths = np.linalg.norm(displacement, axis=1)
    np.testing.assert_allclose(lengths.reshape(len(in_mm), -1).max(axis=1), 2, rtol=1e-5)
    # neighbouring points move alike: along a streamline the displacement changes slowly
    change = np.linalg.norm(np.diff(displacement, axis=3), axis=1)
    steps = np.linalg.norm(np.diff(in_mm.data, axis=3), axis=1)
    assert change.mean() < 0.5 * lengths.mean() and (change / steps).max() < 0.2
    jitter = _augmented(in_mm, jitter_mm=1) - in_mm.data  # not smooth: fails the same check
    assert np.linalg.norm(np.diff(jitter, axis=3), axis=1).mean() > np.linalg.norm(jitter, axis=1).mean()


def _affine_fit(before, after):
    """Least-squares ``after = A @ before + b`` of points (3, N): A, and the largest residual."""
    design = np.concatenate([before.T, np.ones((before.shape[1], 1))], axis=1)  # (N, 4)
    solution, *_ = np.linalg.lstsq(design, after.T, rcond=None)
    residual = np.abs(design @ solution - after.T).max()
    return solution[:3].T, residual


@pytest.mark.parametrize("option", ["scaling", "shear"])
def test_scaling_and_shear_are_affine_maps_within_their_bounds(in_mm, option):
    batch = _augmented(in_mm, **{option: 0.2})
    for index in range(len(in_mm)):
        linear, residual = _affine_fit(in_mm.data[index].reshape(3, -1).astype(float), batch[index].reshape(3, -1))
        assert residual < 1e-3  # affine: straight lines stay straight, parallel ones parallel
        diagonal, off_diagonal = np.diag(linear), linear[~np.eye(3, dtype=bool)]
        if option == "scaling":
            assert np.all(np.abs(diagonal - 1) <= 0.2 + 1e-5) and np.abs(off_diagonal).max() < 1e-5
        else:
            np.testing.assert_allclose(diagonal, 1, atol=1e-5)
            assert np.abs(off_diagonal).max() <= 0.2 + 1e-5
        assert not np.allclose(linear, np.eye(3), atol=1e-3)


def test_resampling_keeps_the_ends_and_cuts_corners(in_mm):
    batch = _augmented(in_mm, resampling=1.0)
    np.testing.assert_array_equal(batch[..., [0, -1]], in_mm.data[..., [0, -1]])  # DIPY keeps both ends
    length = np.linalg.norm(np.diff(batch, axis=3), axis=1).sum(axis=2)  # (G, S)
    stored_length = np.linalg.norm(np.diff(in_mm.data, axis=3), axis=1).sum(axis=2)
    assert np.all(length <= stored_length * (1 + 1e-5)) and (length < stored_length * 0.999).mean() > 0.5
    assert np.array_equal(_augmented(in_mm, resampling=0.0), in_mm.data)


def test_partial_groups_keep_fewer_distinct_rows_in_place(in_mm):
    size = in_mm.data.shape[2]
    keys = np.arange(60)
    indices = keys % len(in_mm)
    batch = GroupDataset(in_mm, Augmentation(partial_groups=1.0), seed=0).batch(indices, keys=keys).numpy()
    kept_counts = []
    for item, index in enumerate(indices):
        rows = _source_rows(batch[item], in_mm.data[index])
        kept = sorted(set(rows))
        assert rows == sorted(rows) and all(rows[row] == row for row in kept)  # real rows, in place
        kept_counts.append(len(kept))
    assert 1 <= min(kept_counts) and max(kept_counts) <= size - 1  # always fewer than S
    assert len(set(kept_counts)) > 5 and abs(np.mean(kept_counts) - size / 2) < 2  # uniform in [1, S - 1]
    half = GroupDataset(in_mm, Augmentation(partial_groups=0.5), seed=0).batch(indices, keys=keys).numpy()
    whole = [np.array_equal(half[item], in_mm.data[index]) for item, index in enumerate(indices)]
    assert 0.3 < np.mean(whole) < 0.7


def test_mixed_groups_draw_real_streamlines_from_many_groups(in_mm):
    batch = _augmented(in_mm, mixed_groups=1.0)
    real = in_mm.data.transpose(0, 2, 1, 3)[in_mm.mask]  # (N, 3, P): every streamline once
    owner = np.nonzero(in_mm.mask)[0]  # its group
    for item in batch:
        rows = item.transpose(1, 0, 2)  # (S, 3, P)
        distances = np.abs(rows[:, None] - real[None]).max(axis=(2, 3))  # (S, N)
        assert np.all(distances.min(axis=1) < 1e-4)  # every row is a real streamline
        assert len(set(owner[distances.argmin(axis=1)])) > 3  # from several groups
    assert not np.array_equal(batch, in_mm.data)


def test_every_option_is_seeded_and_leaves_the_others_draws_alone(in_mm):
    options = {"rotation_degrees": 5, "scaling": 0.1, "shear": 0.05, "elastic_mm": 2, "resampling": 0.5,
               "partial_groups": 0.3, "mixed_groups": 0.2, "streamline_dropout": 0.1}
    first = _augmented(in_mm, **options, jitter_mm=0.3)
    assert np.array_equal(first, _augmented(in_mm, **options, jitter_mm=0.3))
    assert not np.allclose(first, _augmented(in_mm, seed=1, **options, jitter_mm=0.3), atol=1e-2)
    # turning the jitter on adds the noise to the very same group
    noise = first - _augmented(in_mm, **options)
    assert noise.std() == pytest.approx(0.3, rel=0.05)


def test_balanced_sampler_draws_every_label_equally_often_whatever_its_size():
    labels = np.repeat([0, 1, 2], [2, 10, 88])  # 2, 10 and 88 groups of three bundle types
    sampler = StepSampler(100, 50, seed=0, labels=labels)
    drawn = np.concatenate([sampler.indices(step) for step in range(400)])  # 20,000 draws
    frequencies = np.bincount(labels[drawn], minlength=3) / len(drawn)
    assert np.allclose(frequencies, 1 / 3, atol=0.015)
    assert set(drawn[labels[drawn] == 0]) == {0, 1}  # within a label, each of its groups
    assert np.array_equal(StepSampler(100, 50, seed=0, labels=labels).indices(7), sampler.indices(7))
    unbalanced = np.concatenate([StepSampler(100, 50, seed=0).indices(step) for step in range(400)])
    assert np.bincount(labels[unbalanced], minlength=3)[0] / len(unbalanced) == pytest.approx(0.02, abs=0.005)


def test_balanced_sampler_needs_one_label_per_group():
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\), got \(9,\)"):
        StepSampler(10, 4, seed=0, labels=np.zeros(9))
