"""Bundle autoencoders: one configurable model, any bottleneck, safe checkpoints.

::

    from tractvq.models import BundleAutoencoder, preset_config, save_model, load_model
    model = BundleAutoencoder(preset_config("compact", bottleneck="fsq"))
    output = model(groups)                    # groups (B, 3, 64, 64)
    output.reconstruction, output.quantizer_output.indices
    save_model(model, "model.pt")
    model = load_model("model.pt")            # rebuilt from the file alone

Presets: ``paper`` (the published VQ-Diff architecture, :mod:`tractvq.models.paper`),
``compact`` (ours, :mod:`tractvq.models.compact`: one latent vector per streamline),
``basis`` (codes in linear bases fitted to the training streamlines,
:mod:`tractvq.models.basis`: the shipped models) and ``compact-grid`` (the first
``compact``, an 8 x 8 latent grid); see :mod:`tractvq.models.config`.
"""

from tractvq.models.autoencoder import BundleAutoencoder, ModelOutput
from tractvq.models.checkpoint import (
    PUBLISHED_KINDS,
    import_published,
    load_checkpoint,
    load_model,
    model_fingerprint,
    published_layout,
    save_checkpoint,
    save_model,
)
from tractvq.models.config import PRESET_NAMES, PRESETS, ModelConfig, preset_config

__all__ = [
    "PRESETS",
    "PRESET_NAMES",
    "PUBLISHED_KINDS",
    "BundleAutoencoder",
    "ModelConfig",
    "ModelOutput",
    "import_published",
    "load_checkpoint",
    "load_model",
    "model_fingerprint",
    "preset_config",
    "published_layout",
    "save_checkpoint",
    "save_model",
]
