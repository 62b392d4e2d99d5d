import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tractvq import io
from tractvq.cli.main import cli
from tractvq.codes import Codes
from tractvq.encoding import (
    decode,
    encode,
    plan_outputs,
    reconstruct,
    resolve_model,
    write_tractograms,
)
from tractvq.errors import ModelError, OutputError, TractogramError
from tractvq.models.autoencoder import BundleAutoencoder
from tractvq.models.checkpoint import save_model
from tractvq.models.config import preset_config


@pytest.fixture(scope="module")
def bundles(sample_root):
    folder = sample_root / "sub-vqdiff" / "tractography"
    return [folder / "sub-vqdiff__POPT_R.trk", folder / "sub-vqdiff__PYT_R.trk"]


def _model(tmp_path_factory, name, **overrides):
    torch.manual_seed(0)
    model = BundleAutoencoder(preset_config(overrides.pop("preset", "compact"), **overrides))
    return save_model(model, tmp_path_factory.mktemp("models") / f"{name}.pt")


@pytest.fixture(scope="module")
def discrete_model(tmp_path_factory):
    return _model(tmp_path_factory, "vq", bottleneck="vq")


@pytest.fixture(scope="module")
def continuous_model(tmp_path_factory):
    return _model(tmp_path_factory, "ae", bottleneck="identity")


def test_discrete_codes_are_small_unsigned_indices_and_round_trip_through_the_file(tmp_path, bundles, discrete_model):
    codes = encode(bundles, discrete_model)
    assert codes.latents is None and codes.indices.dtype == np.uint16  # K = 512
    assert codes.indices.shape == (3 + 5, 64, 1)  # one index per streamline
    assert codes.nbytes == 8 * 72  # 64 indices of 9 bits per group, packed
    path = codes.save(tmp_path / "codes.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert "data" not in archive.files  # the input is not stored
    again = Codes.load(path)
    np.testing.assert_array_equal(again.indices, codes.indices)
    assert again.model == codes.model and again.layout.bundle_names == ["POPT_R", "PYT_R"]


def test_decode_gives_the_inputs_count_order_and_space(tmp_path, bundles, discrete_model):
    codes = encode(bundles, discrete_model)
    decoded = decode(codes)  # the model is found from the codes
    written = write_tractograms(decoded, codes.layout.sources, tmp_path / "out")
    assert [path.name for path in written] == ["sub-vqdiff__POPT_R.trk", "sub-vqdiff__PYT_R.trk"]
    for path, source in zip(written, bundles):
        original, again = io.load(source), io.load(path)
        assert len(again.streamlines) == len(original.streamlines)
        np.testing.assert_array_equal(again.space_attributes[0], original.space_attributes[0])
        np.testing.assert_array_equal(again.space_attributes[1], original.space_attributes[1])


def test_decoding_codes_equals_reconstructing_in_one_go(bundles, discrete_model, continuous_model):
    for model in (discrete_model, continuous_model):
        codes = encode(bundles, model)
        groups, reconstruction = reconstruct(bundles, model)
        for from_codes, direct in zip(decode(codes), groups.to_tractograms(reconstruction)):
            np.testing.assert_allclose(
                np.asarray(from_codes.streamlines.get_data()), np.asarray(direct.streamlines.get_data()), atol=1e-3
            )


def test_continuous_models_store_latents(bundles, continuous_model):
    codes = encode(bundles, continuous_model)
    assert codes.indices is None and codes.latents.shape == (8, 64, 1, 16) and codes.latents.dtype == np.float32


def test_a_wrong_model_is_refused(bundles, discrete_model, continuous_model):
    codes = encode(bundles, discrete_model)
    with pytest.raises(ModelError, match="is not the model these codes were made with"):
        decode(codes, continuous_model)


def test_unknown_models_are_named(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match=r"missing\.pt: no such model file \(shipped models: default, discrete\)"):
        resolve_model(tmp_path / "missing.pt")
    monkeypatch.setattr("tractvq.encoding.packaged_model_path", lambda name: None)
    with pytest.raises(ModelError, match="default: this installation ships no such model"):
        resolve_model(None)


def test_global_normalisation_needs_a_range_the_model_does_not_record(tmp_path_factory, bundles):
    paper = _model(tmp_path_factory, "paper", preset="paper", bottleneck="identity")
    with pytest.raises(ValueError, match=r"records no coordinate range.*--range MIN MAX"):
        encode(bundles, paper)
    codes = encode(bundles, paper, coordinate_range=(-100.0, 100.0))
    assert codes.latents.shape == (8, 16, 16, 64)


def test_output_planning_refuses_before_any_work(tmp_path, bundles, discrete_model):
    sources = encode(bundles, discrete_model).layout.sources
    with pytest.raises(OutputError, match="2 bundles cannot go into one file"):
        plan_outputs(sources, tmp_path / "one.trk")
    with pytest.raises(OutputError, match="unsupported extension '.txt'"):
        plan_outputs(sources, tmp_path / "out.txt")
    (tmp_path / "out" / "sub-vqdiff" / "tractography").mkdir(parents=True)
    (tmp_path / "out" / "sub-vqdiff" / "tractography" / "sub-vqdiff__PYT_R.trk").write_text("keep")
    with pytest.raises(OutputError, match="sub-vqdiff__PYT_R.trk: already exists"):
        plan_outputs(sources, tmp_path / "out")
    assert len(plan_outputs(sources, tmp_path / "out", force=True)) == 2


def test_a_corrupt_codes_file_is_named(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"nonsense")
    with pytest.raises(TractogramError, match=r"bad\.npz: not a tractvq codes file"):
        Codes.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", metadata=np.array('{"format": "something"}'))
    with pytest.raises(TractogramError, match="not a tractvq codes file \\(format 'something'\\)"):
        Codes.load(tmp_path / "other.npz")


def test_cli_encode_decode_reconstruct(tmp_path, bundles, discrete_model, continuous_model):
    runner = CliRunner()
    codes = tmp_path / "codes.npz"
    result = runner.invoke(cli, ["encode", *map(str, bundles), "-m", str(discrete_model), "-o", str(codes)])
    assert result.exit_code == 0, result.output
    assert "2 bundle(s), 512 streamlines, 8 groups, indices 72 bytes per group" in result.output
    again = runner.invoke(cli, ["encode", *map(str, bundles), "-m", str(discrete_model), "-o", str(codes)])
    assert again.exit_code == 2 and "already exists" in again.stderr
    result = runner.invoke(cli, ["decode", str(codes), "-o", str(tmp_path / "decoded")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "decoded").rglob("*.trk"))) == 2
    wrong = runner.invoke(cli, ["decode", str(codes), "-m", str(continuous_model), "-o", str(tmp_path / "x")])
    assert wrong.exit_code == 2 and "is not the model these codes were made with" in wrong.stderr
    single = tmp_path / "POPT_R.trk"
    result = runner.invoke(cli, ["reconstruct", str(bundles[0]), "-m", str(discrete_model), "-o", str(single)])
    assert result.exit_code == 0, result.output
    assert len(io.load(single).streamlines) == 192


def test_cli_reconstruct_reads_and_writes_published_arrays_in_model_units(tmp_path, bundles, tmp_path_factory):
    paper = _model(tmp_path_factory, "paper_ae", preset="paper", bottleneck="identity")
    points = np.asarray(io.load(bundles[0]).streamlines.get_data()).reshape(-1, 64, 3)
    array = (points / 100).transpose(0, 2, 1).astype(np.float32)  # published layout and units
    np.save(tmp_path / "POPT_R.npy", array)
    output = tmp_path / "recon.npy"
    result = CliRunner().invoke(
        cli, ["reconstruct", str(tmp_path / "POPT_R.npy"), "-m", str(paper), "--normalisation", "none", "-o", str(output)]
    )
    assert result.exit_code == 0, result.output
    reconstruction = np.load(output)
    assert reconstruction.shape == array.shape and reconstruction.dtype == np.float32
    torch.manual_seed(0)
    from tractvq.models.checkpoint import load_model

    model = load_model(paper)
    with torch.inference_mode():
        expected = model(torch.from_numpy(array.reshape(3, 64, 3, 64).transpose(0, 2, 1, 3).copy())).reconstruction
    np.testing.assert_allclose(reconstruction, expected.numpy().transpose(0, 2, 1, 3).reshape(array.shape), atol=1e-5)


def test_load_model_reads_a_file_and_passes_models_through(discrete_model):
    from tractvq.encoding import load_model

    model = load_model(discrete_model)
    assert isinstance(model, BundleAutoencoder) and not model.training
    assert load_model(model) is model


def test_the_shipped_default_model_reconstructs_a_real_bundle_within_a_few_millimetres(bundles):
    from tractvq.metrics import mean_mdf_mm

    model = resolve_model(None)[0]
    assert model.config.preset == "basis" and model.numbers_per_group <= 1024
    groups, reconstruction = reconstruct(bundles[:1])
    mdf = mean_mdf_mm(groups.denormalize(), groups.denormalize(reconstruction), groups.mask)
    assert mdf.mean() < 2.0  # 1.41 mm on POPT_R, a subject it never saw; unfitted bases > 20 mm


def test_the_shipped_discrete_model_stores_a_bundle_in_at_most_288_bytes_of_indices(bundles, tmp_path):
    from tractvq.metrics import mean_mdf_mm

    model = resolve_model("discrete")[0]
    assert model.discrete and model.bytes_per_group <= 288  # the published hard-code VQ-VAE's size
    codes = encode(bundles[:1], "discrete")
    assert codes.latents is None and codes.indices.shape == (len(codes.layout), *model.latent_shape[:2])
    path = codes.save(tmp_path / "codes.npz")
    loaded = Codes.load(path)
    assert np.array_equal(loaded.indices, codes.indices)
    groups, reconstruction = reconstruct(bundles[:1], "discrete")
    mdf = mean_mdf_mm(groups.denormalize(), groups.denormalize(reconstruction), groups.mask)
    assert mdf.mean() < 3.5  # 2.75 mm on POPT_R, a subject it never saw; unfitted bases > 20 mm


@pytest.mark.parametrize("bits", [1, 7, 9, 36, 64])
def test_packed_indices_round_trip_at_the_models_bit_width(bits):
    from tractvq.codes import pack_indices, unpack_indices

    rng = np.random.default_rng(bits)
    indices = rng.integers(0, 2**min(bits, 63), size=(5, 8, 8), dtype=np.uint64)
    indices[0, 0, 0] = (1 << bits) - 1  # the largest index that fits
    packed = pack_indices(indices, bits)
    assert packed.dtype == np.uint8 and packed.shape == (5, -(-64 * bits // 8))
    assert np.array_equal(unpack_indices(packed, bits, (8, 8)), indices)
    if bits < 64:
        with pytest.raises(ValueError, match=f"does not fit in {bits} bits"):
            pack_indices(indices + (1 << bits), bits)


def test_a_codes_file_stores_a_discrete_bundle_in_the_models_bytes(bundles, discrete_model, tmp_path):
    codes = encode(bundles[:1], discrete_model)
    model = resolve_model(discrete_model)[0]
    path = codes.save(tmp_path / "codes.npz")
    with np.load(path, allow_pickle=False) as archive:
        packed = archive["packed_indices"]
    assert packed.shape == (len(codes.layout), model.bytes_per_group)
    assert codes.nbytes == len(codes.layout) * model.bytes_per_group
    loaded = Codes.load(path)
    assert np.array_equal(loaded.indices, codes.indices) and loaded.bits == model.bits_per_index


def test_version_1_codes_files_with_unpacked_indices_are_still_read(bundles, discrete_model, tmp_path):
    import json

    codes = encode(bundles[:1], discrete_model)
    metadata = {"format": "tractvq-codes", "format_version": 1, "tractvq_version": "0.1.0", "model": codes.model,
                "stored": "indices"}
    path = tmp_path / "v1.npz"
    np.savez(path, metadata=np.array(json.dumps(metadata)), indices=codes.indices, **codes.layout.to_arrays(with_data=False))
    loaded = Codes.load(path)
    assert np.array_equal(loaded.indices, codes.indices)
    assert loaded.bits == int(codes.indices.max()).bit_length()  # no recorded width: the fewest bits that hold them


def _fresh_python(code: str, **environment) -> str:
    """What ``code`` prints in a fresh interpreter, ``OMP_WAIT_POLICY`` unset unless given."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"} | environment
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout


def test_the_api_lets_idle_openmp_threads_sleep_as_the_cli_does_unless_told_otherwise():
    code = "import os, tractvq; print(os.environ['OMP_WAIT_POLICY'])"
    assert _fresh_python(code) == "PASSIVE\n"
    assert _fresh_python(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE\n"


def test_loading_the_shipped_model_does_not_import_torch_dynamo():
    # torch.eye on the meta device (the checkpoint's layout check) imported it: 2 s per process
    code = "import sys, tractvq; tractvq.load_model(); print('torch._dynamo' in sys.modules)"
    assert _fresh_python(code) == "False\n"
