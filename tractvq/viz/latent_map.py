"""Latent neighbourhoods: a t-SNE map of group latents and a query's nearest neighbours.

Each group's latent is its quantized encoding ``(h, w, D)`` flattened (what the decoder
reads). :func:`latent_map` embeds all groups in 2-D with t-SNE (van der Maaten and Hinton,
"Visualizing Data using t-SNE", JMLR 2008; scikit-learn's :class:`~sklearn.manifold.TSNE`,
seeded), coloured by bundle, and draws the query group beside its ``k`` nearest groups in
latent space (Euclidean distance on the flattened latents, ties broken by group order). Do
groups of one bundle sit together, and do a group's neighbours look like it?
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tractvq.viz import backend
from tractvq.viz.images import font_size, parse_colour, text_colour, title_panel, vstack
from tractvq.viz.inputs import group_label, group_streamlines, parse_group

__all__ = ["LatentMap", "group_latents", "latent_map", "nearest_neighbours", "plot_embedding", "tsne_embedding"]


def group_latents(groups, model, *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Flattened quantized latents of every group.

    Parameters
    ----------
    groups : GroupedBundles
        Grouped with the model's preprocessing (:func:`tractvq.encoding.group_for_model`).
    model : BundleAutoencoder
    batch_size, device
        See :func:`tractvq.robustness.encode_latents`.

    Returns
    -------
    ndarray, shape (G, h * w * D), float32
    """
    from tractvq.robustness import encode_latents

    latents = encode_latents(model, groups.data, batch_size=batch_size, device=device)  # (G, h, w, D)
    return latents.reshape(len(latents), -1)


def tsne_embedding(latents: np.ndarray, *, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """2-D t-SNE of the rows of ``latents``.

    Parameters
    ----------
    latents : ndarray, shape (G, L)
        At least 4 rows.
    seed : int, optional
        ``random_state`` of t-SNE, which starts from random positions. It runs on one
        thread, so the same seed gives the same map (and several threads only slow a few
        hundred groups down).
    perplexity : float, optional
        Default ``min(30, (G - 1) / 3)``.

    Returns
    -------
    ndarray, shape (G, 2), float64
    """
    backend.require("sklearn", purpose="the latent map")
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    latents = np.asarray(latents, np.float64)
    if len(latents) < 4:
        raise ValueError(f"a t-SNE map needs at least 4 groups, got {len(latents)}")
    perplexity = min(30.0, (len(latents) - 1) / 3.0) if perplexity is None else float(perplexity)
    with threadpool_limits(1):
        embedding = TSNE(n_components=2, perplexity=perplexity, init="random", learning_rate="auto",
                         random_state=int(seed)).fit_transform(latents)
    return np.asarray(embedding, np.float64)


def nearest_neighbours(latents: np.ndarray, query: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` groups nearest to ``query`` in latent space (Euclidean), nearest first.

    Parameters
    ----------
    latents : ndarray, shape (G, L)
    query : int
    k : int
        At least 1, at most G - 1.

    Returns
    -------
    indices : ndarray, shape (k,), int64
        Never ``query`` itself; equal distances in group order.
    distances : ndarray, shape (k,), float64
    """
    latents = np.asarray(latents, np.float64)
    if not 1 <= k < len(latents):
        raise ValueError(f"neighbours must be between 1 and {len(latents) - 1} (groups - 1), got {k}")
    distances = np.linalg.norm(latents - latents[query], axis=1)  # (G,)
    distances[query] = np.inf
    order = np.argsort(distances, kind="stable")[:k]
    return order.astype(np.int64), distances[order]


@dataclass
class LatentMap:
    """A t-SNE map of group latents and a query's nearest neighbours.

    Attributes
    ----------
    embedding : ndarray, shape (G, 2)
    labels : list of str
        ``BUNDLE:INDEX`` of each group.
    bundles : list of str
        Bundle name of each group.
    query : int
    neighbours : ndarray, shape (k,)
        Nearest first.
    distances : ndarray, shape (k,)
        Latent distances of the neighbours to the query.
    image : ndarray, shape (H, W, 3), uint8
        The figure: the map above the query and its neighbours rendered with FURY.
    settings : dict
    """

    embedding: np.ndarray
    labels: list[str]
    bundles: list[str]
    query: int
    neighbours: np.ndarray
    distances: np.ndarray
    image: np.ndarray = field(repr=False)
    settings: dict = field(default_factory=dict)


def plot_embedding(embedding: np.ndarray, bundles: Sequence[str], *, query: int | None = None,
                   neighbours: Sequence[int] = (), size: Sequence[int] = (900, 560), background="white",
                   title: str = "") -> np.ndarray:
    """A scatter plot of a 2-D embedding coloured by bundle, the query and its neighbours marked.

    Parameters
    ----------
    embedding : ndarray, shape (G, 2)
    bundles : sequence of str
        Each point's bundle.
    query : int, optional
        Marked with a star.
    neighbours : sequence of int, optional
        Ringed and numbered from 1, nearest first.
    size : (int, int), optional
        Pixels.
    background : colour, optional
    title : str, optional

    Returns
    -------
    ndarray, shape (height, width, 3), uint8
    """
    backend.require("matplotlib", purpose="the latent map")
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rgb = parse_colour(background)
    foreground = tuple(v / 255 for v in text_colour(rgb))
    dpi = 100
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, facecolor=rgb)
    FigureCanvasAgg(figure)
    axis = figure.add_axes((0.06, 0.08, 0.66, 0.84), facecolor=rgb)
    names = list(dict.fromkeys(bundles))
    palette = [matplotlib.colormaps["tab20"](i % 20) for i in range(len(names))]
    bundles = np.asarray(bundles)
    for name, colour in zip(names, palette):
        chosen = bundles == name
        axis.scatter(embedding[chosen, 0], embedding[chosen, 1], s=22, color=colour, label=f"{name} ({chosen.sum()})",
                     edgecolors="none")
    for rank, index in enumerate(neighbours, start=1):
        axis.scatter(*embedding[index], s=120, facecolors="none", edgecolors=foreground, linewidths=1.2)
        axis.annotate(str(rank), embedding[index], xytext=(5, 5), textcoords="offset points", color=foreground, fontsize=8)
    if query is not None:
        axis.scatter(*embedding[query], s=260, marker="*", color=foreground, edgecolors=rgb, linewidths=0.8,
                     label="query", zorder=3)
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_color(foreground)
    axis.set_title(title, color=foreground, fontsize=10)
    axis.set_xlabel("t-SNE 1", color=foreground, fontsize=9)
    axis.set_ylabel("t-SNE 2", color=foreground, fontsize=9)
    legend = axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
                         ncol=1 if len(names) <= 16 else 2, title="bundle (groups)", title_fontsize=8)
    for text in [*legend.get_texts(), legend.get_title()]:
        text.set_color(foreground)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def latent_map(groups, model, *, query: str | int | None = None, neighbours: int = 5, seed: int = 0,
               view: str = "sagittal", panel_size: Sequence[int] = (200, 200), background="white",
               perplexity: float | None = None, batch_size: int = 64, device: str = "cpu") -> LatentMap:
    """Map the latents of all groups and draw a query group beside its nearest neighbours.

    Parameters
    ----------
    groups : GroupedBundles
        Grouped with the model's preprocessing (:func:`tractvq.encoding.group_for_model`).
    model : BundleAutoencoder
    query : str or int, optional
        ``BUNDLE:INDEX`` (:func:`tractvq.viz.inputs.parse_group`) or a group index; default
        the first group.
    neighbours : int, optional
        How many nearest groups to draw.
    seed : int, optional
        Seed of t-SNE.
    view : {"sagittal", "axial", "coronal"}, optional
        View of the FURY panels (each framed on its own group: shapes compare).
    panel_size : (int, int), optional
        Pixels of one FURY panel.
    background : colour, optional
    perplexity : float, optional
        See :func:`tsne_embedding`.
    batch_size, device
        See :func:`group_latents`.

    Returns
    -------
    LatentMap
    """
    backend.require(purpose="the latent map")
    backend.require("sklearn", purpose="the latent map")
    from tractvq.viz.render import render_panels

    index = query if isinstance(query, (int, np.integer)) else parse_group(groups, query)
    if not 0 <= index < len(groups):
        raise ValueError(f"query must be a group index below {len(groups)}, got {index}")
    latents = group_latents(groups, model, batch_size=batch_size, device=device)
    embedding = tsne_embedding(latents, seed=seed, perplexity=perplexity)
    near, distances = nearest_neighbours(latents, index, neighbours)
    labels = [group_label(groups, g) for g in range(len(groups))]
    bundles = [groups.sources[b].name for b in groups.bundle_index]
    shown = [index, *near.tolist()]
    titles = [f"query {labels[index]}"] + [f"{rank}. {labels[g]}  d={d:.2f}" for rank, (g, d) in enumerate(zip(near, distances), 1)]
    panels = render_panels([group_streamlines(groups, g) for g in shown], titles=titles, view=view, size=panel_size,
                           background=background, shared_frame=False, trim=True)
    rgb = parse_colour(background)
    width = max(panels.shape[1], 720)
    scatter = plot_embedding(embedding, bundles, query=index, neighbours=near, size=(width, int(width * 0.55)),
                             background=rgb, title=f"t-SNE of {len(groups)} group latents ({latents.shape[1]} numbers each),"
                             f" seed {seed}; star: {labels[index]}, rings: its {neighbours} nearest in latent space")
    panels = title_panel(panels, f"{labels[index]} and its {neighbours} nearest groups in latent space"
                         " (d: Euclidean latent distance), each framed on itself", background=rgb,
                         size=font_size(*panel_size))
    image = vstack([scatter, panels], gap=8, background=rgb)
    settings = {"seed": seed, "perplexity": perplexity, "neighbours": neighbours, "view": view, "distance": "euclidean"}
    return LatentMap(embedding, labels, bundles, index, near, distances, image, settings)
