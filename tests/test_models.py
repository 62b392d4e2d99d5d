import json
import pickle
from dataclasses import replace

import pytest
import torch
from torch import nn

from tractvq.bundles import PAPER_SETTINGS, GroupingSettings
from tractvq.errors import ModelError, OutputError
from tractvq.models import (
    PRESETS,
    BundleAutoencoder,
    ModelConfig,
    ModelOutput,
    load_checkpoint,
    load_model,
    model_fingerprint,
    preset_config,
    save_checkpoint,
    save_model,
)
from tractvq.models.paper import PaperResidual


def make_model(preset="paper", bottleneck="identity", seed=0, **overrides):
    torch.manual_seed(seed)
    return BundleAutoencoder(preset_config(preset, bottleneck=bottleneck, **overrides))


# The first compact preset (``compact-grid``), whose models (e.g. the shipped discrete one) keep loading.
COMPACT_GRID = dict(layout="grid", channels=(32, 64, 128), hidden_channels=128, residual_channels=64)


def groups(batch=2, seed=1):
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("preset", PRESETS)
def test_config_round_trips_through_json(preset):
    config = preset_config(preset, bottleneck="fsq", bottleneck_options={"levels": (8, 5, 5, 5)})
    data = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(data) == config
    assert ModelConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    assert config.bottleneck_options == {"levels": [8, 5, 5, 5]}  # stored as JSON data
    assert hash(ModelConfig.from_dict(data)) == hash(config)


def test_presets_record_their_preprocessing():
    paper, compact = preset_config("paper"), preset_config("compact")
    assert paper == ModelConfig()
    assert paper.grouping == PAPER_SETTINGS and paper.grouping.minimum is None
    assert (paper.bottleneck, paper.codebook_size, paper.latent_shape) == ("vqdiff", 512, (16, 16, 64))
    assert compact.grouping == GroupingSettings()
    h, w, dim = compact.latent_shape
    assert h * w * dim <= 1024
    assert preset_config("compact", grouping={"group_size": 32}).grouping.group_size == 32


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: preset_config("huge"), "choose one of: paper, compact"),
        (lambda: preset_config("paper", depth=3), "no field 'depth'"),
        (lambda: preset_config("paper", preset="compact"), "cannot set preset"),
        (lambda: preset_config("compact-grid", preset="paper"), "cannot set preset"),
        (lambda: ModelConfig.from_dict({"preset": "paper", "colour": 1}), "unknown model config key(s) 'colour'"),
        (lambda: ModelConfig.from_dict({"grouping": {"points": 3}}), "unknown grouping key(s) 'points'"),
        (lambda: ModelConfig(bottleneck="zip"), "unknown bottleneck 'zip'"),
        (lambda: ModelConfig(latent_dim=0), "latent_dim must be an integer >= 1, got 0"),
        (lambda: ModelConfig(codebook_size=True), "got True"),
        (lambda: ModelConfig(channels=(8, 16, 32)), "channels must hold two values"),
        (lambda: ModelConfig(channels=()), "at least one"),
        (lambda: ModelConfig(grouping=replace(PAPER_SETTINGS, group_size=30)), "multiple of 4"),
        (lambda: ModelConfig(bottleneck_options={"f": object()}), "JSON-able"),
        (lambda: ModelConfig(grouping={"n_points": 64}), "must be a GroupingSettings"),
        (lambda: ModelConfig(layout="streamline"), "preset 'paper' has the grid layout"),
        (lambda: preset_config("compact", layout="ring"), "layout must be 'grid' or 'streamline', got 'ring'"),
    ],
)
def test_invalid_configs_raise_value_errors_naming_the_value(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


def test_unknown_bottleneck_option_is_refused_when_building():
    with pytest.raises(ValueError, match="takes no option 'temprature'"):
        BundleAutoencoder(preset_config("paper", bottleneck_options={"temprature": 1.0}))


# ------------------------------------------------------------------------ published sizes
@pytest.mark.parametrize(
    ("bottleneck", "count"),
    [("identity", 662_083), ("vq", 694_851), ("vqdiff", 694_851), ("vq-ema", 728_131)],
)
def test_paper_parameter_counts_are_the_published_ones(bottleneck, count):
    # The published VQ-EMA count includes its EMA buffers (_ema_w, _ema_cluster_size).
    assert make_model("paper", bottleneck).num_parameters(buffers=True) == count
    if bottleneck != "vq-ema":
        assert make_model("paper", bottleneck).num_parameters() == count


def test_paper_residual_block_matches_the_published_in_place_relu():
    # The published block: nn.Sequential(nn.ReLU(True), conv3x3, nn.ReLU(True), conv1x1) and
    # ``x + self._block(x)``, whose in-place ReLU rewrites x before the addition.
    ours = PaperResidual(8, 4)
    published = nn.Sequential(
        nn.ReLU(True), nn.Conv2d(8, 4, 3, padding=1, bias=False), nn.ReLU(True), nn.Conv2d(4, 8, 1, bias=False)
    )
    published.load_state_dict(ours._block.state_dict())
    x = torch.randn(2, 8, 5, 5)
    expected_input = x.clone()
    expected = expected_input + published(expected_input)
    assert torch.equal(ours(x), expected)


# ------------------------------------------------------------------------ forward / decode
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("bottleneck", ["identity", "vq", "vqdiff", "fsq"])
def test_forward_shapes(preset, bottleneck):
    # the basis preset's FSQ takes one level per latent dim (a uniform quantizer of each)
    options = {"bottleneck_options": {"levels": [5] * 16}} if (preset, bottleneck) == ("basis", "fsq") else {}
    model = make_model(preset, bottleneck, **options)
    output = model(groups())
    assert isinstance(output, ModelOutput)
    h, w, dim = model.latent_shape
    assert output.reconstruction.shape == (2, 3, 64, 64)
    assert output.quantizer_output.quantized.shape == (2, h, w, dim)
    if bottleneck == "identity":
        assert output.quantizer_output.indices is None
    else:
        assert output.quantizer_output.indices.shape == (2, h, w)
    loss, logs = model.loss(groups(), output)
    assert loss.ndim == 0 and loss.requires_grad
    assert logs["loss"] == pytest.approx(logs["reconstruction"] + logs["quantizer_loss"])


def test_latent_sizes():
    compact = make_model("compact", "identity")
    assert compact.latent_shape == (64, 1, 16)  # one 16-dim vector per streamline
    assert (compact.numbers_per_group, compact.bytes_per_group) == (1024, 4096)
    assert make_model("compact", "identity", **COMPACT_GRID).latent_shape == (8, 8, 16)
    assert preset_config("compact-grid") == preset_config("compact", **COMPACT_GRID)
    assert make_model("compact", "vq").numbers_per_group == 64
    assert make_model("compact", "vq").bytes_per_group == 72  # 64 indices x 9 bits
    paper_vq = make_model("paper", "vq")
    assert (paper_vq.numbers_per_group, paper_vq.bytes_per_group) == (256, 288)
    assert make_model("paper", "vqdiff").numbers_per_group == 16 * 16 * 64  # soft mixture
    hard = make_model("paper", "vqdiff", bottleneck_options={"eval_mode": "hard"})
    assert hard.numbers_per_group == 256
    assert make_model("compact", "fsq").bytes_per_group == 80  # 1000 codes: 10 bits


def test_streamline_layout_codes_each_streamline_alone():
    """In the streamline layout a latent row depends on its streamline and its neighbours only:
    the first layer sees one whole streamline, then 1 + 2 * residual_blocks kernel-3 mixes."""
    model = make_model("compact", "identity").eval()
    changed = groups()
    changed[:, :, 40] += 1.0  # move streamline 40 of each group
    with torch.no_grad():
        before, after = model.encoder(groups()), model.encoder(changed)  # (B, D, S, 1)
    moved = (before - after).abs().amax(dim=(0, 1, 3)) > 0  # (S,)
    reach = 1 + model.config.residual_blocks  # kernel 3: one row per mixing layer
    assert moved.nonzero().flatten().tolist() == list(range(40 - reach, 40 + reach + 1))


def test_streamline_layout_takes_any_group_size_and_point_count():
    model = make_model("compact", "vq", grouping={"group_size": 30, "n_points": 20})
    output = model(torch.randn(2, 3, 30, 20))
    assert model.latent_shape == (30, 1, 16) and output.reconstruction.shape == (2, 3, 30, 20)
    with pytest.raises(ValueError, match="multiple of 8"):
        preset_config("compact-grid", grouping={"group_size": 30})


def test_grid_layout_models_still_load(tmp_path):
    """A compact checkpoint written before ``layout`` existed (no such key) is a grid model."""
    grid = make_model("compact", "vq", **COMPACT_GRID)
    stored = grid.config.to_dict()
    del stored["layout"]
    assert ModelConfig.from_dict(stored) == grid.config
    path = save_model(grid, tmp_path / "grid.pt")
    assert load_model(path).latent_shape == (8, 8, 16)


@pytest.mark.parametrize(("preset", "bottleneck"), [("paper", "vq"), ("compact", "fsq"), ("compact", "vq-ema")])
def test_decode_indices_reproduces_the_decoding_of_discrete_codes(preset, bottleneck):
    model = make_model(preset, bottleneck).eval()
    with torch.no_grad():
        output = model(groups())
        decoded = model.decode_indices(output.quantizer_output.indices)
    torch.testing.assert_close(decoded, output.reconstruction)


@pytest.mark.parametrize("bottleneck", ["identity", "gaussian"])
def test_decode_indices_raises_for_continuous_bottlenecks(bottleneck):
    model = make_model("compact", bottleneck)
    with pytest.raises(ValueError, match="continuous"):
        model.decode_indices(torch.zeros(1, 8, 8, dtype=torch.long))


def test_shape_errors_name_expected_and_got():
    model = make_model("compact", "vq")
    with pytest.raises(ValueError, match=r"expected groups of shape \(B, 3, 64, 64\), got \(2, 3, 32, 64\)"):
        model(torch.zeros(2, 3, 32, 64))
    with pytest.raises(ValueError, match=r"got \(3, 64, 64\)"):
        model.encode(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match=r"expected latents of shape \(B, 64, 1, 16\), got \(1, 8, 8, 16\)"):
        model.decode(torch.zeros(1, 8, 8, 16))
    with pytest.raises(ValueError, match=r"expected indices of shape \(B, 64, 1\), got \(1, 8, 8\)"):
        model.decode_indices(torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="indices must be integers"):
        model.decode_indices(torch.zeros(1, 64, 1))


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize(
    ("preset", "bottleneck", "options"),
    [("paper", "vq-ema", {}), ("paper", "vqdiff", {"eval_mode": "mean"}), ("compact", "fsq", {"levels": [5, 5, 5]})],
)
def test_saved_and_loaded_model_gives_identical_outputs(tmp_path, preset, bottleneck, options):
    model = make_model(preset, bottleneck, bottleneck_options=options)
    model.train()
    model(groups(4, seed=3))  # a training step moves EMA buffers
    model.eval()
    path = save_model(model, tmp_path / "model.pt", extra={"step": 7})
    state = torch.random.get_rng_state()
    loaded, extra = load_model(path, return_extra=True)
    assert torch.equal(torch.random.get_rng_state(), state)  # loading draws no random numbers
    assert extra == {"step": 7} and not loaded.training
    assert loaded.config == model.config
    with torch.no_grad():
        expected, got = model(groups()), loaded(groups())
    assert torch.equal(expected.reconstruction, got.reconstruction)
    assert model_fingerprint(loaded) == model_fingerprint(model)


def test_checkpoint_is_plain_data(tmp_path):
    path = save_model(make_model("compact", "vq"), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "tractvq-model" and payload["format_version"] == 1
    assert set(payload) == {"format", "format_version", "tractvq_version", "config", "state_dict", "extra", "weights_sha256"}
    assert ModelConfig.from_dict(payload["config"]) == preset_config("compact", bottleneck="vq")


def test_save_model_never_overwrites_without_force(tmp_path):
    path = save_model(make_model("compact"), tmp_path / "model.pt")
    with pytest.raises(OutputError, match="already exists"):
        save_model(make_model("compact"), path)
    save_model(make_model("compact", seed=5), path, force=True)
    assert model_fingerprint(load_model(path)) == model_fingerprint(make_model("compact", seed=5))


def test_fingerprint_is_stable_and_follows_weights_and_config():
    first, again = make_model("compact", "vq"), make_model("compact", "vq")
    assert model_fingerprint(first) == model_fingerprint(again)
    assert len(model_fingerprint(first)) == 16
    with torch.no_grad():
        again.decoder.stages[-1].bias[0] += 1e-6
    assert model_fingerprint(first) != model_fingerprint(again)
    other_config = make_model("compact", "vq", bottleneck_options={"commitment": 0.5})
    assert model_fingerprint(first) != model_fingerprint(other_config)


class _Payload:
    """Unpickling this runs ``open(marker, "w")``, i.e. creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payloads_are_refused_without_running(tmp_path):
    # The payload is live: ordinary unpickling would run it.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof))).close()
    assert proof.exists()

    marker = tmp_path / "marker"
    model_path = save_model(make_model("compact"), tmp_path / "model.pt")
    payload = torch.load(model_path, weights_only=True)
    payload["extra"] = {"note": _Payload(marker)}  # a checkpoint otherwise valid
    torch.save(payload, tmp_path / "evil_model.pt")
    torch.save(_Payload(marker), tmp_path / "evil_object.pt")
    with open(tmp_path / "evil_plain.pkl", "wb") as handle:
        pickle.dump({"state_dict": _Payload(marker)}, handle)
    for name in ("evil_model.pt", "evil_object.pt", "evil_plain.pkl"):
        with pytest.raises(ModelError) as error:
            load_model(tmp_path / name)
        assert name in str(error.value)
        with pytest.raises(ModelError):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()
    with pytest.raises(ModelError, match=r"evil_model\.pt: refused to unpickle \S*open: not a plain tensor checkpoint") as error:
        load_model(tmp_path / "evil_model.pt")
    assert "weights_only" not in str(error.value) and "\n" not in str(error.value)


def test_unreadable_files_raise_model_errors(tmp_path):
    valid = save_model(make_model("compact"), tmp_path / "model.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(valid[: len(valid) // 2])
    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "folder.pt").mkdir()
    for name, problem in [
        ("truncated.pt", "cannot be read"),
        ("garbage.pt", "not a PyTorch checkpoint"),
        ("empty.pt", "empty or truncated"),
        ("missing.pt", "does not exist"),
        ("folder.pt", "is not a file"),
    ]:
        with pytest.raises(ModelError) as error:
            load_model(tmp_path / name)
        assert str(error.value).startswith(str(tmp_path / name)) and problem in str(error.value)


def test_wrong_checkpoint_contents_raise_model_errors(tmp_path):
    path = save_model(make_model("compact", "vq"), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)

    def write(name, changed):
        torch.save(changed, tmp_path / name)
        return tmp_path / name

    state = dict(payload["state_dict"])
    del state["quantizer.codebook.weight"]
    state["extra.weight"] = torch.zeros(1)
    cases = [
        (write("tensor.pt", torch.zeros(3)), "holds a Tensor"),
        (write("other.pt", {"format": "something"}), "not a tractvq model checkpoint"),
        (write("newer.pt", {**payload, "format_version": 2}), "format_version 2"),
        (write("config.pt", {**payload, "config": {**payload["config"], "latent_dim": -1}}), "invalid model config"),
        (write("keys.pt", {**payload, "state_dict": state}), "missing key(s): quantizer.codebook.weight"),
        (write("shape.pt", {**payload, "config": {**payload["config"], "latent_dim": 8}}), "encoder.project.weight (shape"),
    ]
    for file, message in cases:
        with pytest.raises(ModelError) as error:
            load_model(file)
        assert message in str(error.value)
    with pytest.raises(ModelError, match="unexpected key"):
        load_model(tmp_path / "keys.pt")


def test_training_checkpoints_round_trip_safely(tmp_path):
    layer = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    payload = {
        "model": make_model("compact", "vq-ema").state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": 1,
        "rng": {"torch": torch.random.get_rng_state()},
        "history": [{"loss": 0.5}, None, ("a", True)],
    }
    path = save_checkpoint(payload, tmp_path / "train.pt")
    loaded = load_checkpoint(path)
    assert loaded["step"] == 1 and loaded["history"] == payload["history"]
    assert torch.equal(loaded["rng"]["torch"], payload["rng"]["torch"])
    optimizer.load_state_dict(loaded["optimizer"])
    assert torch.equal(loaded["model"]["quantizer.codebook.cluster_size"], torch.ones(512))
    with pytest.raises(OutputError):
        save_checkpoint(payload, path)
    import numpy as np

    with pytest.raises(ValueError, match=r"payload\['rng'\]\['numpy'\]: a numpy.ndarray"):
        save_checkpoint({"rng": {"numpy": np.zeros(3)}}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
