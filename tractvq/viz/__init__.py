"""Pictures of bundles with FURY: originals and reconstructions, latent maps, perturbation strips.

Rendering is optional: it needs the ``viz`` extra (``pip install "tractvq[viz]"``: FURY,
pygfx, wgpu, matplotlib, scikit-learn). ``import tractvq.viz`` works without it; the functions
that draw raise :class:`~tractvq.viz.backend.MissingExtraError` saying what to install.
Everything renders headless (no display, no GPU needed) and returns ``(H, W, 3)`` uint8
arrays; the scenes are FURY scenes, for notebooks and interactive windows.

Modules, one job each::

    ``backend``     the FURY/pygfx/wgpu set-up: optional imports, the GPU device, offscreen
                    renders, interactive windows
    ``camera``      standard views (sagittal, axial, coronal) and automatic framing
    ``colours``     orientation colours, per-streamline MDF error colours
    ``images``      titles, rows of panels, colour bars, saving
    ``inputs``      bundles from tractograms, folders and codes files; groups by ``BUNDLE:INDEX``
    ``render``      scenes of one bundle, or an original beside or under its reconstructions
    ``latent_map``  t-SNE of group latents and nearest neighbours in latent space
    ``strip``       decoded groups across the sizes of a latent perturbation
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "MissingExtraError": "tractvq.viz.backend",
    "NoDisplayError": "tractvq.viz.backend",
    "has_display": "tractvq.viz.backend",
    "VIEWS": "tractvq.viz.camera",
    "frame_camera": "tractvq.viz.camera",
    "orientation_colours": "tractvq.viz.colours",
    "streamline_errors": "tractvq.viz.colours",
    "save_image": "tractvq.viz.images",
    "load_bundle": "tractvq.viz.inputs",
    "parse_group": "tractvq.viz.inputs",
    "bundle_actor": "tractvq.viz.render",
    "bundle_scene": "tractvq.viz.render",
    "render_scene": "tractvq.viz.render",
    "render_bundle": "tractvq.viz.render",
    "render_panels": "tractvq.viz.render",
    "compare": "tractvq.viz.render",
    "compare_files": "tractvq.viz.render",
    "Comparison": "tractvq.viz.render",
    "latent_map": "tractvq.viz.latent_map",
    "LatentMap": "tractvq.viz.latent_map",
    "perturbation_strip": "tractvq.viz.strip",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'tractvq.viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
