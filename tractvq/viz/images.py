"""Composing rendered panels into one picture: titles, rows, colour bars, saving.

Images are ``(H, W, 3)`` uint8 arrays throughout. Titles are drawn with Pillow, colour bars
with matplotlib, so every figure is exactly as many pixels as asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tractvq.errors import OutputError
from tractvq.outputs import atomic_output, check_output

__all__ = [
    "IMAGE_EXTENSIONS",
    "check_image_path",
    "colour_bar",
    "font_size",
    "hstack",
    "parse_colour",
    "save_image",
    "text_colour",
    "title_panel",
    "trim_rows",
    "vstack",
]

#: Formats :func:`save_image` writes, by extension.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def parse_colour(value) -> tuple[float, float, float]:
    """An RGB triple in [0, 1] from a colour name, a hex string or a tuple.

    Parameters
    ----------
    value : str or sequence of float
        ``"white"``, ``"black"``, ``"#202020"``, ``(1, 1, 1)``; a tuple of values above 1 is
        read as 0-255.

    Returns
    -------
    (float, float, float)

    Raises
    ------
    ValueError
        If it is not a colour.
    """
    from matplotlib.colors import to_rgb

    if not isinstance(value, str):
        values = np.asarray(value, np.float64)
        if values.shape != (3,) or not np.isfinite(values).all() or values.min() < 0:
            raise ValueError(f"a colour needs three values in [0, 1] or [0, 255], got {value!r}")
        if values.max() > 1:
            values = values / 255.0
        value = tuple(np.clip(values, 0, 1))
    try:
        return tuple(float(v) for v in to_rgb(value))
    except ValueError as error:
        raise ValueError(f"not a colour: {value!r} (a name such as 'white' or a hex code such as '#1e1e1e')") from error


def text_colour(background: Sequence[float]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (RGB in [0, 1])."""
    luminance = 0.2126 * background[0] + 0.7152 * background[1] + 0.0722 * background[2]
    return (0, 0, 0) if luminance > 0.5 else (255, 255, 255)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap font size
        return ImageFont.load_default()


def font_size(width: int, height: int) -> int:
    """Pixels of title text for an image of ``width`` x ``height``: 12 to 28."""
    return int(np.clip(np.sqrt(width * height) / 22, 12, 28))


def title_panel(image: np.ndarray, title: str, *, background: Sequence[float] = (1, 1, 1),
                size: int | None = None) -> np.ndarray:
    """The image under a band holding ``title``.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3), uint8
    title : str
        Left out (and the band with it) when empty.
    background : (float, float, float), optional
        The band's colour; the text is black or white, whichever reads better.
    size : int, optional
        Font size in pixels (default :func:`font_size` of the image).

    Returns
    -------
    ndarray, shape (H + band, W, 3), uint8
        The band is 1.6 times the font size high.
    """
    if not title:
        return image
    from PIL import Image, ImageDraw

    size = font_size(image.shape[1], image.shape[0]) if size is None else int(size)
    band = Image.fromarray(_fill((int(size * 1.6), image.shape[1]), background))
    ImageDraw.Draw(band).text((size // 2, size // 4), title, fill=text_colour(background), font=_font(size))
    return np.concatenate([np.asarray(band), image])


def _fill(shape, background) -> np.ndarray:
    return np.broadcast_to(np.round(np.asarray(background) * 255).astype(np.uint8), (*shape, 3)).copy()


def trim_rows(images: Sequence[np.ndarray], *, background: Sequence[float] = (1, 1, 1), margin: int = 6) -> list[np.ndarray]:
    """Cut the rows that are background in every image (of one height), keeping ``margin``.

    Panels of a flat bundle in a row of square panels lose their empty top and bottom.
    """
    fill = np.round(np.asarray(background) * 255).astype(np.int16)
    drawn = np.zeros(images[0].shape[0], bool)
    for image in images:
        drawn |= (np.abs(image.astype(np.int16) - fill).max(axis=2) > 8).any(axis=1)
    if not drawn.any():
        return list(images)
    rows = np.flatnonzero(drawn)
    top, bottom = max(0, rows[0] - margin), min(len(drawn), rows[-1] + 1 + margin)
    return [image[top:bottom] for image in images]


def hstack(images: Sequence[np.ndarray], *, gap: int = 0, background: Sequence[float] = (1, 1, 1)) -> np.ndarray:
    """Images side by side, top-aligned, ``gap`` pixels apart."""
    height = max(image.shape[0] for image in images)
    parts = []
    for index, image in enumerate(images):
        if index and gap:
            parts.append(_fill((height, gap), background))
        if image.shape[0] < height:
            image = np.concatenate([image, _fill((height - image.shape[0], image.shape[1]), background)])
        parts.append(image)
    return np.concatenate(parts, axis=1)


def vstack(images: Sequence[np.ndarray], *, gap: int = 0, background: Sequence[float] = (1, 1, 1)) -> np.ndarray:
    """Images one below the other, centred, ``gap`` pixels apart."""
    width = max(image.shape[1] for image in images)
    parts = []
    for index, image in enumerate(images):
        if index and gap:
            parts.append(_fill((gap, width), background))
        missing = width - image.shape[1]
        if missing:
            left = missing // 2
            image = np.concatenate([_fill((image.shape[0], left), background), image,
                                    _fill((image.shape[0], missing - left), background)], axis=1)
        parts.append(image)
    return np.concatenate(parts, axis=0)


def colour_bar(width: int, height: int, vmax: float, *, cmap, label: str = "MDF to the original (mm)",
               background: Sequence[float] = (1, 1, 1)) -> np.ndarray:
    """A horizontal colour bar from 0 to ``vmax`` with ticks and a label.

    Parameters
    ----------
    width, height : int
        Pixels of the whole strip (the bar takes the middle 60% of the width).
    vmax : float
    cmap : matplotlib.colors.Colormap
    label : str, optional
    background : (float, float, float), optional

    Returns
    -------
    ndarray, shape (height, width, 3), uint8
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=background)
    FigureCanvasAgg(figure)
    foreground = tuple(v / 255 for v in text_colour(background))
    font = max(7.0, min(11.0, height / 7.0))  # points; at 100 dpi one point is 1.39 pixels
    bar_height, top = max(8.0, height * 0.16), max(4.0, height * 0.08)  # pixels
    axis = figure.add_axes((0.2, 1 - (top + bar_height) / height, 0.6, bar_height / height))
    bar = ColorbarBase(axis, cmap=cmap, norm=Normalize(0.0, vmax), orientation="horizontal", extend="max")
    bar.set_label(label, color=foreground, fontsize=font, labelpad=2)
    bar.ax.tick_params(colors=foreground, labelsize=font, length=3, pad=2)
    bar.outline.set_edgecolor(foreground)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def check_image_path(path: str | os.PathLike, *, force: bool = False) -> Path:
    """Check, before any work, that an image can be written at ``path``.

    Raises
    ------
    OutputError
        For an extension other than :data:`IMAGE_EXTENSIONS`, an existing file without
        ``force``, or a missing or read-only folder.
    """
    path = check_output(path, force=force)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise OutputError(path, f"unsupported image format {path.suffix!r} (supported: {', '.join(IMAGE_EXTENSIONS)})")
    return path


def save_image(image: np.ndarray, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write an image atomically, never replacing one without ``force``.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3), uint8
    path : str or os.PathLike
        ``.png`` (or ``.jpg``).
    force : bool, optional

    Returns
    -------
    pathlib.Path

    Raises
    ------
    OutputError
        For another extension, an existing file without ``force``, or a missing folder.
    """
    from PIL import Image

    path = check_image_path(path, force=force)
    with atomic_output(path, force=force) as temporary:
        picture = Image.fromarray(np.ascontiguousarray(image))
        if path.suffix.lower() == ".png":
            picture.save(temporary, optimize=True)
        else:
            picture.save(temporary, quality=92)
    return path
