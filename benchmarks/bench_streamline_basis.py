"""How many numbers a group needs: linear bases of the two ``compact`` layouts on real groups.

Usage::

    python benchmarks/bench_streamline_basis.py CACHE [--components 4 8 16 32]

For a cache made by ``tractvq prepare``, fits a PCA (scikit-learn) on the training groups and
reconstructs the validation groups from ``k`` components of

``streamline``
    each streamline: its ``3 x P`` coordinates (``S * k`` numbers per group), the layout of
    the ``compact`` preset;
``patch``
    each patch of 8 neighbouring streamlines x 8 points (``3 x 8 x 8`` coordinates each,
    ``(S / 8) * (P / 8) * k`` numbers per group), the latent positions of ``compact-grid``.

Prints, for each ``k``, the numbers per group and the mean MDF in mm (:func:`tractvq.metrics.mean_mdf_mm`,
in the groups' original space) on the validation groups. A linear basis is what an
autoencoder of that latent layout must beat; with ``k = 16`` both layouts hold 1,024 numbers
per 64 x 64 group.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.decomposition import PCA

from tractvq.cache import load_cache
from tractvq.metrics import mean_mdf_mm

PATCH = 8  # streamlines and points per patch of the grid layout


def _streamline_rows(data: np.ndarray) -> np.ndarray:
    """Rows ``(G * S, 3 * P)`` of groups ``(G, 3, S, P)``."""
    count, _, size, points = data.shape
    return data.transpose(0, 2, 1, 3).reshape(count * size, 3 * points)


def _from_streamline_rows(rows: np.ndarray, shape: tuple) -> np.ndarray:
    count, _, size, points = shape
    return rows.reshape(count, size, 3, points).transpose(0, 2, 1, 3)


def _patch_rows(data: np.ndarray) -> np.ndarray:
    """Rows ``(G * S/8 * P/8, 3 * 8 * 8)`` of groups ``(G, 3, S, P)``."""
    count, _, size, points = data.shape
    patches = data.reshape(count, 3, size // PATCH, PATCH, points // PATCH, PATCH)
    return patches.transpose(0, 2, 4, 1, 3, 5).reshape(-1, 3 * PATCH * PATCH)


def _from_patch_rows(rows: np.ndarray, shape: tuple) -> np.ndarray:
    count, _, size, points = shape
    patches = rows.reshape(count, size // PATCH, points // PATCH, 3, PATCH, PATCH)
    return patches.transpose(0, 3, 1, 4, 2, 5).reshape(shape)


LAYOUTS = {"streamline": (_streamline_rows, _from_streamline_rows), "patch": (_patch_rows, _from_patch_rows)}


def basis_errors(cache, components: list[int]) -> list[tuple[str, int, int, float]]:
    """``(layout, k, numbers per group, mean validation MDF in mm)`` for every layout and ``k``."""
    training, validation = cache.split("train"), cache.split("validation")
    original_mm = validation.denormalize()
    results = []
    for layout, (to_rows, from_rows) in LAYOUTS.items():
        fitted_rows, held_out_rows = to_rows(training.data), to_rows(validation.data)
        rows_per_group = len(held_out_rows) // len(validation)
        for k in components:
            pca = PCA(n_components=k, svd_solver="full").fit(fitted_rows)
            rebuilt_rows = pca.inverse_transform(pca.transform(held_out_rows))
            rebuilt = from_rows(rebuilt_rows.astype(np.float32), validation.data.shape)
            mdf = mean_mdf_mm(original_mm, validation.denormalize(rebuilt), validation.mask)
            results.append((layout, k, rows_per_group * k, float(np.nanmean(mdf))))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", help="a cache made by `tractvq prepare`")
    parser.add_argument("--components", type=int, nargs="+", default=[4, 8, 16, 32])
    arguments = parser.parse_args()
    cache = load_cache(arguments.cache)
    print(f"{'layout':<11} {'k':>3} {'numbers/group':>14} {'validation MDF (mm)':>20}")
    for layout, k, numbers, mdf in basis_errors(cache, arguments.components):
        print(f"{layout:<11} {k:>3} {numbers:>14,} {mdf:>20.2f}")


if __name__ == "__main__":
    main()
