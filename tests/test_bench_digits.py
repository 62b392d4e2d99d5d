import csv
import datetime
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch

from tractvq.bench import (
    COLUMNS,
    ConvAutoencoder,
    ImageDataset,
    format_markdown,
    load_cifar10,
    load_digits,
    psnr,
    read_cifar10_batch,
    run_benchmark,
    train_and_evaluate,
    write_results,
)
from tractvq.bench import digits as bench_digits
from tractvq.errors import OutputError, TractvqError
from tractvq.quantizers import build, codebook_stats

METRICS = ("mse", "psnr", "perplexity", "usage", "train_mse")


@pytest.fixture(scope="module")
def small_digits():
    """A few hundred of the real digits: enough to train for a few steps."""
    dataset = load_digits(seed=0)
    return ImageDataset("digits", dataset.train[:256], dataset.test[:96])


@pytest.fixture(scope="module")
def rows(small_digits):
    return run_benchmark(["identity", "vq"], small_digits, steps=4, batch_size=32, seed=3, progress=False)


def write_batch(path, data, labels, protocol=2):
    """A CIFAR-10 python batch: a pickled dict, as the official files."""
    batch = {b"batch_label": b"test", b"labels": list(labels), b"data": data, b"filenames": [b"x.png"] * len(data)}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def test_psnr_of_a_known_mse():
    assert psnr(0.01, 2.0) == pytest.approx(10 * math.log10(4 / 0.01)) == pytest.approx(26.0206, abs=1e-4)
    assert psnr(0.01, 1.0) == pytest.approx(20.0)
    assert psnr(0.0) == math.inf
    with pytest.raises(ValueError, match="mse must be >= 0, got -1"):
        psnr(-1)


def test_digits_are_scaled_and_split_by_the_seed():
    dataset = load_digits(seed=0)
    assert dataset.train.shape == (1438, 1, 8, 8) and dataset.test.shape == (359, 1, 8, 8)
    assert dataset.train.dtype == np.float32
    assert dataset.train.min() == -1 and dataset.train.max() == 1
    assert np.array_equal(load_digits(seed=0).test, dataset.test)
    assert not np.array_equal(load_digits(seed=1).test, dataset.test)
    with pytest.raises(ValueError, match="test_fraction must be in \\(0, 1\\), got 1.5"):
        load_digits(test_fraction=1.5)


def test_benchmark_rows_have_every_column_and_finite_metrics(rows):
    assert [row["quantizer"] for row in rows] == ["identity", "vq"]
    identity, vq = rows
    for row in rows:
        assert tuple(row) == COLUMNS
        assert all(math.isfinite(row[key]) for key in ("mse", "psnr", "ms_per_step", "train_mse"))
        assert row["psnr"] == pytest.approx(psnr(row["mse"], 2.0))
        assert row["ms_per_step"] > 0
    assert identity["discrete"] is False and identity["codebook_size"] is None
    assert math.isnan(identity["perplexity"]) and math.isnan(identity["usage"])
    assert vq["discrete"] is True and vq["codebook_size"] == 512
    assert 1 <= vq["perplexity"] <= 512 and 0 < vq["usage"] <= 1
    assert (vq["usage"] * 512) == round(vq["usage"] * 512)  # a count of codes


def test_same_seed_same_metrics_other_seed_other_metrics(small_digits, rows):
    again = run_benchmark(["identity", "vq"], small_digits, steps=4, batch_size=32, seed=3, progress=False)
    for first, second in zip(rows, again):
        for key in METRICS:
            assert first[key] == pytest.approx(second[key], rel=0, abs=0, nan_ok=True), key
    other = run_benchmark(["vq"], small_digits, steps=4, batch_size=32, seed=4, progress=False)
    assert other[0]["mse"] != rows[1]["mse"]


def test_code_statistics_pool_the_whole_test_set(small_digits, monkeypatch):
    torch.manual_seed(0)
    model = ConvAutoencoder(build("vq", dim=8, codebook_size=16), channels=1, hidden=8).eval()
    images = small_digits.test
    with torch.no_grad():
        latents = model.encoder(torch.from_numpy(images)).permute(0, 2, 3, 1).reshape(-1, 8)
        model.quantizer.codebook.weight.copy_(latents[::23][:16])  # codes that get chosen
        reconstruction, output = model(torch.from_numpy(images))
    expected = codebook_stats(output.indices, 16)
    assert float(expected["perplexity"]) > 4
    pooled = bench_digits.evaluate(model, images)
    monkeypatch.setattr(bench_digits, "EVAL_BATCH", 7)  # batch statistics would differ
    in_small_batches = bench_digits.evaluate(model, images)
    for metrics in (pooled, in_small_batches):
        assert metrics["perplexity"] == pytest.approx(float(expected["perplexity"]), rel=1e-6)
        assert metrics["usage"] == pytest.approx(float(expected["usage"]))
        assert metrics["mse"] == pytest.approx(float((reconstruction - torch.from_numpy(images)).pow(2).mean()), rel=1e-5)


def test_every_method_starts_from_the_same_encoder_and_decoder(small_digits, monkeypatch):
    initial = {}

    class Recording(ConvAutoencoder):
        def __init__(self, quantizer, **keywords):
            super().__init__(quantizer, **keywords)
            initial[quantizer.name] = {
                key: value.clone() for key, value in self.state_dict().items() if not key.startswith("quantizer.")
            }

    monkeypatch.setattr(bench_digits, "ConvAutoencoder", Recording)
    run_benchmark(["gaussian", "vq", "fsq"], small_digits, steps=1, batch_size=8, progress=False)
    assert initial["vq"].keys() == initial["fsq"].keys() == initial["gaussian"].keys()
    for key, value in initial["vq"].items():
        assert torch.equal(value, initial["fsq"][key]) and torch.equal(value, initial["gaussian"][key]), key


def test_method_hooks_are_called(small_digits, monkeypatch):
    calls = []

    def spying_build(name, **keywords):
        quantizer = build(name, **keywords)
        quantizer.set_step = lambda step: calls.append(step)
        quantizer.replace_unused_codes = lambda: calls.append("replace")
        return quantizer

    monkeypatch.setattr(bench_digits, "build", spying_build)
    train_and_evaluate("vq", small_digits, steps=5, batch_size=8, replace_every=2, progress=False)
    assert calls == [0, 1, "replace", 2, 3, "replace", 4]


def test_bad_names_and_budgets_are_refused(small_digits):
    with pytest.raises(ValueError, match="unknown quantizer 'nope'; choose from: identity, gaussian, vq"):
        run_benchmark(["vq", "nope"], small_digits)
    with pytest.raises(ValueError, match="must not repeat"):
        run_benchmark(["vq", "vq"], small_digits)
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        run_benchmark(["vq"], small_digits, steps=0)
    with pytest.raises(ValueError, match="batch_size must be at most the 256 training images, got 1000"):
        run_benchmark(["vq"], small_digits, batch_size=1000)


def test_results_are_written_and_never_replaced_without_force(rows, tmp_path):
    output = tmp_path / "bench"
    assert write_results(rows, output, settings={"steps": 4}, title="digits") == output
    with open(output / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [entry["quantizer"] for entry in table] == ["identity", "vq"]
    assert tuple(table[0]) == COLUMNS and table[0]["perplexity"] == "nan" and table[0]["codebook_size"] == ""
    assert float(table[1]["mse"]) == rows[1]["mse"]
    markdown = (output / "results.md").read_text()
    assert markdown == format_markdown(rows)
    lines = markdown.splitlines()
    assert lines[0].startswith("| Quantizer | Kind | K | MSE | PSNR (dB) | Perplexity | Usage | ms/step")
    assert len(lines) == 4 and lines[2].startswith("| identity | continuous | n/a |")
    assert (output / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((output / "settings.json").read_text()) == {"steps": 4}
    before = (output / "results.csv").read_bytes()
    with pytest.raises(OutputError, match="already exists"):
        write_results(rows[:1], output)
    assert (output / "results.csv").read_bytes() == before
    write_results(rows[:1], output, force=True)
    assert len((output / "results.md").read_text().splitlines()) == 3
    assert not (output / "settings.json").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["bench"]  # no temporary left


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_batches_are_read_in_their_real_format(tmp_path, protocol):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    write_batch(folder / "data_batch_1", train, [0, 1, 2, 3, 9], protocol)
    write_batch(folder / "test_batch", test, [4, 5, 6], protocol)
    images, labels = read_cifar10_batch(folder / "data_batch_1")
    assert images.shape == (5, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1, 2, 3, 9]
    assert images[2, 1, 3, 4] == train[2, 1024 + 3 * 32 + 4]  # green plane, row 3, column 4
    for where in (folder, tmp_path):  # the batches' folder or its parent
        dataset = load_cifar10(where)
        assert dataset.name == "cifar10"
        assert dataset.train.shape == (5, 3, 32, 32) and dataset.test.shape == (3, 3, 32, 32)
        assert dataset.train.dtype == np.float32
        np.testing.assert_allclose(dataset.test.reshape(3, -1), test / 127.5 - 1, atol=1e-6)


def test_cifar10_batches_pickled_by_numpy_1_are_read(tmp_path):
    """The official files name numpy.core.multiarray (NumPy 1), not numpy._core."""
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    write_batch(tmp_path / "test_batch", data, [1, 2])
    raw = (tmp_path / "test_batch").read_bytes()
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    (tmp_path / "test_batch").write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    images, labels = read_cifar10_batch(tmp_path / "test_batch")
    assert np.array_equal(images.reshape(2, -1), data) and labels.tolist() == [1, 2]


class _Payload:
    """Runs a function when unpickled."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("intruder", [_Payload(), torch.zeros(2), datetime.date(2009, 4, 8)])
def test_the_unpickler_refuses_anything_but_plain_data_and_arrays(tmp_path, intruder):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"extra": intruder}))
    with pytest.raises(TractvqError, match="data_batch_1: refused to unpickle .*: a CIFAR-10 batch holds only plain data"):
        read_cifar10_batch(path)


def test_cifar10_problems_name_the_file(tmp_path):
    with pytest.raises(TractvqError, match="no test_batch in this folder"):
        load_cifar10(tmp_path)
    write_batch(tmp_path / "test_batch", np.zeros((2, 3072), np.uint8), [0, 1])
    with pytest.raises(TractvqError, match="no training batch"):
        load_cifar10(tmp_path)
    write_batch(tmp_path / "data_batch_1", np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(TractvqError, match=r"data_batch_1: b'data' must be uint8 of shape \(N, 3072\), got uint8 \(2, 100\)"):
        load_cifar10(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(TractvqError, match="data_batch_1: not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)
