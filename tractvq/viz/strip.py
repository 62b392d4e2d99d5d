"""A strip of one group decoded across the sizes of a latent perturbation.

The published VQ-Diff figure shows one group decoded from ``latent + alpha * 0.5`` for the
nine ``alpha`` of ``linspace(-1, 1, 9)``; :func:`perturbation_strip` draws that (or the
Gaussian sizes) from a :class:`~tractvq.robustness.PerturbationResult`, the original first,
all panels in one frame so that the drift shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tractvq.viz.images import font_size, parse_colour, title_panel
from tractvq.viz.inputs import group_label, group_streamlines, parse_group

__all__ = ["KIND_SYMBOLS", "perturbation_strip"]

#: How each kind's size is written above its panel.
KIND_SYMBOLS = {"directional": "alpha", "gaussian": "eps"}


def perturbation_strip(groups, result, *, group: str | int | None = None, kind: str = "directional",
                       view: str = "sagittal", size: Sequence[int] = (180, 180), background="white",
                       include_original: bool = True) -> np.ndarray:
    """One group decoded at every size of one kind of perturbation, side by side.

    Parameters
    ----------
    groups : GroupedBundles
        The groups the study perturbed.
    result : PerturbationResult
        From :func:`tractvq.robustness.perturbation_study`.
    group : str or int, optional
        ``BUNDLE:INDEX`` (:func:`tractvq.viz.inputs.parse_group`) or a group index; default
        the first group.
    kind : {"directional", "gaussian"}, optional
    view : {"sagittal", "axial", "coronal"}, optional
    size : (int, int), optional
        Pixels of one panel.
    background : colour, optional
    include_original : bool, optional
        Draw the input group first.

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
        Titled panels in increasing size, in one shared frame, under a caption.

    Raises
    ------
    ValueError
        If the result holds no perturbation of ``kind``.
    """
    from tractvq.viz.render import render_panels

    index = group if isinstance(group, (int, np.integer)) else parse_group(groups, group)
    sizes = sorted(value for name, value in result.reconstructions if name == kind)
    if not sizes:
        known = sorted({name for name, _ in result.reconstructions})
        raise ValueError(f"the study holds no {kind} perturbation (it holds: {', '.join(known) or 'none'})")
    symbol = KIND_SYMBOLS.get(kind, "size")
    bundles = [group_streamlines(groups, index, result.reconstructions[(kind, value)]) for value in sizes]
    titles = [f"{symbol} {value:+.2f}" if kind == "directional" else f"{symbol} {value:.2f}" for value in sizes]
    if include_original:
        bundles.insert(0, group_streamlines(groups, index))
        titles.insert(0, "original")
    image = render_panels(bundles, titles=titles, view=view, size=size, background=background, shared_frame=True,
                          trim=True)
    if kind == "directional":
        how = f"latent + alpha * {result.settings.get('step', 0.5):g}"
    else:
        how = "latent + eps * N(0, 1)"
    caption = f"group {group_label(groups, index)} decoded from {how}"
    return title_panel(image, caption, background=parse_colour(background), size=font_size(*size))
