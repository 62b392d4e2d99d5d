import numpy as np
import pytest
from dipy.tracking.distances import bundles_distances_mdf

from tractvq.bundles import GroupingSettings, group
from tractvq.io import load
from tractvq.metrics import mean_mdf_mm, pairwise_mdf


def _dipy_diagonal(first, second):
    """MDF of corresponding rows by DIPY: the diagonal of the full distance matrix."""
    return np.diag(bundles_distances_mdf(list(first), list(second)))


@pytest.fixture(scope="module")
def sample_groups(sample_bundle):
    return group(load(sample_bundle), GroupingSettings(n_points=32, group_size=16))


def test_pairwise_mdf_matches_dipy_on_real_streamlines(sample_groups):
    original = sample_groups.denormalize()  # (G, S, P, 3)
    rng = np.random.default_rng(0)
    noisy = original + rng.normal(scale=2.0, size=original.shape)
    reversed_noisy = noisy[:, :, ::-1]
    for reconstruction in (noisy, reversed_noisy):
        ours = pairwise_mdf(original, reconstruction)
        for index in range(len(original)):
            expected = _dipy_diagonal(original[index].astype(np.float32), reconstruction[index].astype(np.float32))
            np.testing.assert_allclose(ours[index], expected, rtol=1e-5, atol=1e-4)


def test_flip_is_free_and_identity_is_zero(sample_groups):
    original = sample_groups.denormalize()
    assert np.all(pairwise_mdf(original, original) == 0)
    np.testing.assert_allclose(pairwise_mdf(original, original[:, :, ::-1]), 0, atol=1e-12)


def test_mdf_of_a_translation_is_its_length():
    line = np.stack([np.linspace(0, 10, 5), np.zeros(5), np.zeros(5)], axis=1)  # (5, 3)
    assert pairwise_mdf(line, line + [0, 3, 4]) == pytest.approx(5.0)


def test_mean_mdf_counts_only_masked_rows(sample_groups):
    original = sample_groups.denormalize()
    rng = np.random.default_rng(1)
    reconstruction = original + rng.normal(scale=1.0, size=original.shape)
    mask = sample_groups.mask.copy()
    mask[0, ::2] = False
    reconstruction[0, ::2] += 1000.0  # unmasked rows: must not count
    means = mean_mdf_mm(original, reconstruction, mask)
    assert means.shape == (len(original),)
    for index in range(len(original)):
        rows = mask[index]
        expected = _dipy_diagonal(original[index][rows].astype(np.float32), reconstruction[index][rows].astype(np.float32))
        assert means[index] == pytest.approx(expected.mean(), rel=1e-5)
    empty = np.zeros_like(mask)
    assert np.isnan(mean_mdf_mm(original, reconstruction, empty)).all()


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 5, 3\) and \(2, 4, 3\)"):
        pairwise_mdf(np.zeros((2, 5, 3)), np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"got \(1, 2, 5, 3\) and \(1, 3\)"):
        mean_mdf_mm(np.zeros((1, 2, 5, 3)), np.zeros((1, 2, 5, 3)), np.ones((1, 3), bool))
