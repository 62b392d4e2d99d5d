"""Baseline codecs (tractvq.baselines) and ``tractvq rate-distortion`` with baselines."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from tractvq import io
from tractvq.baselines import Encoded, load_pca, make_baseline
from tractvq.bundles import GroupingSettings, group
from tractvq.cache import load_cache, prepare
from tractvq.cli.main import cli
from tractvq.errors import ModelError
from tractvq.metrics import pairwise_mdf


@pytest.fixture(scope="module")
def groups(sample_bundle):
    """POPT_R (192 streamlines, three full groups)."""
    return group(io.load(sample_bundle), GroupingSettings(), name="POPT_R", path=sample_bundle)


@pytest.fixture(scope="module")
def padded(sample_bundle):
    """The first 100 streamlines of POPT_R: two groups, the second completed by 28 repeated rows."""
    tractogram = io.load(sample_bundle)
    return group(tractogram[:100], GroupingSettings(), name="part", path=sample_bundle)


@pytest.fixture(scope="module")
def fit_cache(sample_bundle, tmp_path_factory):
    return prepare([sample_bundle], tmp_path_factory.mktemp("fit") / "cache", validation_fraction=0, progress=False)


def masked_mdf(groups, reconstruction):
    return pairwise_mdf(groups.denormalize()[groups.mask], groups.denormalize(reconstruction)[groups.mask])


@pytest.mark.parametrize(("name", "bytes_per_streamline"), [
    ("float16", 384), ("pca-16", 64), ("pca-16@36bits", 4.5), ("pca-12@3bits", 3 / 8),
])
def test_fixed_size_codecs_store_exactly_their_bytes(groups, name, bytes_per_streamline):
    baseline = make_baseline(name).fit(groups)
    encoded = baseline.encode(groups)
    assert encoded.n_streamlines == 192
    assert encoded.n_bytes == 192 * bytes_per_streamline
    assert encoded.bytes_per_streamline == bytes_per_streamline


def test_quantised_pca_fits_the_published_code_size_exactly(groups):
    """36 bits per streamline: a 64-streamline bundle takes 288 bytes, like the discrete model."""
    baseline = make_baseline("pca-16@36bits").fit(groups)
    assert baseline.allocation.sum() == 36
    assert list(baseline.allocation) == sorted(baseline.allocation, reverse=True)  # by variance
    assert baseline.encode(groups.select([0])).n_bytes == 288
    assert baseline.encode(groups.select([0, 1])).payload["bits"].shape == (576,)


def test_float16_round_trip_is_float16_rounding(groups):
    reconstruction, _ = make_baseline("float16").reconstruct(groups)
    expected = groups.denormalize()[groups.mask].astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(groups.denormalize(reconstruction)[groups.mask], expected, atol=1e-4)
    assert masked_mdf(groups, reconstruction).max() < 0.05


def test_pca_equals_a_direct_svd_projection(groups):
    baseline = make_baseline("pca-8").fit(groups)
    rows = groups.data.transpose(0, 2, 3, 1)[groups.mask].reshape(192, -1).astype(np.float64)
    mean = rows.mean(axis=0)
    _, _, axes = np.linalg.svd(rows - mean, full_matrices=False)
    expected = mean + (rows - mean) @ axes[:8].T @ axes[:8]
    reconstruction, encoded = baseline.reconstruct(groups)
    decoded = reconstruction.transpose(0, 2, 3, 1)[groups.mask].reshape(192, -1)
    np.testing.assert_allclose(decoded, expected, atol=1e-5)
    coefficients = encoded.payload["coefficients"]
    direct = (rows - mean) @ axes[:8].T
    np.testing.assert_allclose(np.abs(coefficients), np.abs(direct), atol=1e-5)  # equal up to each axis' sign


def test_pca_is_deterministic_and_saves_and_loads(groups, tmp_path):
    first = make_baseline("pca-16@36bits").fit(groups)
    second = make_baseline("pca-16@36bits").fit(groups)
    assert np.array_equal(first.basis, second.basis)
    path = first.save(tmp_path / "pca.npz")
    loaded = load_pca(path)
    assert loaded.name == "pca-16@36bits"
    assert np.array_equal(loaded.encode(groups).payload["bits"], first.encode(groups).payload["bits"])
    assert np.array_equal(loaded.reconstruct(groups)[0], first.reconstruct(groups)[0])
    with np.load(path, allow_pickle=False) as archive:
        assert "basis" in archive.files


def test_loading_a_bad_pca_file_names_it(groups, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, mean=np.zeros(3))
    with pytest.raises(ModelError, match=f"^{path}: not a tractvq PCA baseline"):
        load_pca(path)


def test_dipy_compress_equals_dipy_called_directly(sample_bundle, groups):
    from dipy.tracking.streamline import set_number_of_points
    from dipy.tracking.streamlinespeed import compress_streamlines

    tractogram = io.load(sample_bundle)
    originals = [tractogram.streamlines]
    baseline = make_baseline("dipy-compress-0.5")
    reconstruction, encoded = baseline.reconstruct(groups, originals)
    compressed = compress_streamlines(list(tractogram.streamlines), tol_error=0.5)
    assert encoded.n_bytes == sum(6 * len(streamline) + 2 for streamline in compressed)
    expected = np.asarray(set_number_of_points([s.astype(np.float16).astype(np.float64) for s in compressed], nb_points=64))
    decoded = groups.to_streamlines(reconstruction)[0]  # source order and orientation
    np.testing.assert_allclose(decoded, expected, atol=1e-4)


def test_repeated_rows_decode_to_their_streamlines_copy(padded):
    """Rows that complete a short group hold the same reconstruction as the streamline's own row."""
    assert (~padded.mask).sum() == 28
    for name in ("float16", "dipy-compress-1", "pca-4"):
        reconstruction, encoded = make_baseline(name).fit(padded).reconstruct(padded)
        assert encoded.n_streamlines == 100
        own = {(s, g): reconstruction[g, :, row] for g in range(2) for row, s in enumerate(padded.streamline_index[g])
               if padded.mask[g, row]}
        for g, row in zip(*np.nonzero(~padded.mask)):
            np.testing.assert_allclose(reconstruction[g, :, row], own[(padded.streamline_index[g, row], g)], atol=1e-6)


@pytest.mark.parametrize("name", ["pca", "pca-0", "pca-16@0bits", "dipy-compress-0", "dipy-compress-x", "float32"])
def test_bad_names_list_the_spellings(name):
    with pytest.raises(ValueError, match=r"pca-K \(e\.g\. pca-16\)|at least|tolerance > 0"):
        make_baseline(name)


def test_an_unfitted_pca_refuses_to_encode(groups):
    with pytest.raises(ValueError, match="pca-16 is not fitted"):
        make_baseline("pca-16").encode(groups)


def read_csv(path):
    with open(path, newline="") as handle:
        return {row["label"]: row for row in csv.DictReader(handle)}


def test_rate_distortion_scores_baselines_beside_models_on_a_tractogram(sample_bundle, fit_cache, tmp_path):
    output = tmp_path / "rd"
    arguments = ["rate-distortion", str(sample_bundle), "-m", "discrete", "--baselines", "float16",
                 "--baselines", "dipy-compress-0.5", "--baselines", "pca-16@36bits", "--fit-cache", str(fit_cache),
                 "-o", str(output)]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    rows = read_csv(output / "rate_distortion.csv")
    assert list(rows) == ["discrete", "float16", "dipy-compress-0.5", "pca-16@36bits"]
    assert (rows["discrete"]["kind"], rows["discrete"]["bytes_per_streamline"]) == ("discrete", "4.5")
    assert (rows["pca-16@36bits"]["kind"], rows["pca-16@36bits"]["bytes_per_bundle"]) == ("baseline", "288.0")
    assert rows["float16"]["bytes_per_streamline"] == "384.0"
    assert float(rows["float16"]["mdf_mm"]) < 0.05 < float(rows["dipy-compress-0.5"]["mdf_mm"]) < 0.5
    assert float(rows["float16"]["buan_mm"]) == 1.0
    # the same codec, fitted on the same cache, scored by the library directly
    pca = make_baseline("pca-16@36bits").fit(load_cache(fit_cache).split("train"))
    groups = group(io.load(sample_bundle), GroupingSettings(), name="POPT_R", path=sample_bundle)
    reconstruction, _ = pca.reconstruct(groups)
    per_group = [masked_mdf(groups.select([g]), reconstruction[[g]]).mean() for g in range(len(groups))]
    assert float(rows["pca-16@36bits"]["mdf_mm"]) == pytest.approx(np.mean(per_group))
    assert "| pca-16@36bits | baseline | 4.50 | 288 | n/a |" in result.output
    assert (output / "rate_distortion.png").stat().st_size > 0


def test_rate_distortion_scores_a_cache_validation_split(sample_bundle, fit_cache, tmp_path):
    cache = prepare([sample_bundle], tmp_path / "cache", validation_fraction=0.34, progress=False)
    result = CliRunner().invoke(cli, ["rate-distortion", str(cache), "--baselines", "pca-8", "--fit-cache",
                                      str(fit_cache), "-o", str(tmp_path / "rd")])
    assert result.exit_code == 0, result.output
    row = read_csv(tmp_path / "rd" / "rate_distortion.csv")["pca-8"]
    validation = load_cache(cache).split("validation")
    reconstruction, _ = make_baseline("pca-8").fit(load_cache(fit_cache).split("train")).reconstruct(validation)
    assert row["bytes_per_streamline"] == "32.0"
    assert float(row["mdf_mm"]) == pytest.approx(masked_mdf(validation, reconstruction).mean())  # one group


@pytest.mark.parametrize(("extra", "message"), [
    (["--baselines", "pca-16"], "the pca baselines are fitted on a training cache: give --fit-cache CACHE"),
    (["--baselines", "pca16"], "Invalid value for '--baselines': unknown baseline 'pca16'; known: pca-K (e.g. pca-16)"),
    ([], "nothing to plot"),
])
def test_rate_distortion_refuses_bad_baselines_before_writing(sample_bundle, tmp_path, extra, message):
    result = CliRunner().invoke(cli, ["rate-distortion", str(sample_bundle), *extra, "-o", str(tmp_path / "rd")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "rd").exists()


def test_encoded_counts_bytes_of_its_arrays():
    encoded = Encoded({"a": np.zeros(3, np.float16), "b": np.zeros(2, np.uint8)}, 2)
    assert (encoded.n_bytes, encoded.bytes_per_streamline) == (8, 4.0)
