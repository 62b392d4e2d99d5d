"""Image data sets of the quantizer benchmark, as float32 arrays ``(N, C, H, W)`` in [-1, 1].

Two readers, both offline:

* :func:`load_digits`: scikit-learn's bundled ``load_digits`` (1,797 real handwritten digits,
  8x8, one channel, grey levels 0..16), split into train and test by a seeded permutation;
* :func:`load_cifar10`: the standard CIFAR-10 "python version" batches in a local folder
  (``data_batch_1`` .. ``data_batch_5`` and ``test_batch``), read with a restricted unpickler.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tractvq.errors import TractvqError

__all__ = ["ImageDataset", "load_cifar10", "load_digits", "read_cifar10_batch"]

CIFAR10_FOLDER = "cifar-10-batches-py"  # the folder the official archive unpacks to
CIFAR10_TRAIN = tuple(f"data_batch_{number}" for number in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR10_PIXELS = 3 * 32 * 32


class ImageDataset(NamedTuple):
    """A train/test split of images.

    Attributes
    ----------
    name : str
        Short name of the data set (``"digits"``, ``"cifar10"``).
    train : numpy.ndarray of float32, shape (N_train, C, H, W)
        Training images, values in [-1, 1].
    test : numpy.ndarray of float32, shape (N_test, C, H, W)
        Test images, values in [-1, 1].
    """

    name: str
    train: np.ndarray
    test: np.ndarray

    @property
    def data_range(self) -> float:
        """Peak-to-peak range of the pixel values (2: from -1 to 1), the PSNR peak."""
        return 2.0


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """scikit-learn's handwritten digits, scaled to [-1, 1] and split by a seeded permutation.

    Parameters
    ----------
    test_fraction : float, optional
        Fraction of the 1,797 images held out for testing, in (0, 1).
    seed : int, optional
        Seed of the :class:`numpy.random.Generator` that permutes the images before the split.

    Returns
    -------
    ImageDataset
        ``train`` and ``test`` of shape ``(N, 1, 8, 8)``; grey level ``g`` in 0..16 becomes
        ``g / 8 - 1``.

    Raises
    ------
    ValueError
        If ``test_fraction`` is not in (0, 1).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    images = sklearn_digits().images.astype(np.float32)  # (1797, 8, 8), 0..16
    images = (images / 8.0 - 1.0)[:, None]  # (1797, 1, 8, 8), -1..1
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = max(1, round(test_fraction * len(images)))
    return ImageDataset("digits", images[order[n_test:]], images[order[:n_test]])


def load_cifar10(folder: str | os.PathLike) -> ImageDataset:
    """CIFAR-10 from its standard python batches, scaled to [-1, 1].

    Parameters
    ----------
    folder : str or os.PathLike
        The folder holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (the
        ``cifar-10-batches-py`` folder of the official archive, or its parent). Training
        batches that are missing are skipped, as long as one is there.

    Returns
    -------
    ImageDataset
        ``train`` (up to 50,000) and ``test`` (10,000) images of shape ``(N, 3, 32, 32)``;
        byte ``b`` becomes ``b / 127.5 - 1``.

    Raises
    ------
    TractvqError
        If the folder, ``test_batch`` or every training batch is missing, or a batch is not
        a CIFAR-10 batch (see :func:`read_cifar10_batch`).
    """
    folder = Path(folder)
    if (folder / CIFAR10_FOLDER).is_dir():
        folder = folder / CIFAR10_FOLDER
    if not folder.is_dir():
        raise TractvqError(folder, "no such folder (expected the CIFAR-10 python batches)")
    if not (folder / CIFAR10_TEST).is_file():
        raise TractvqError(folder, f"no {CIFAR10_TEST} in this folder (expected the CIFAR-10 python batches)")
    train_files = [folder / name for name in CIFAR10_TRAIN if (folder / name).is_file()]
    if not train_files:
        raise TractvqError(folder, f"no training batch ({', '.join(CIFAR10_TRAIN)}) in this folder")
    train = np.concatenate([read_cifar10_batch(path)[0] for path in train_files])
    test = read_cifar10_batch(folder / CIFAR10_TEST)[0]
    return ImageDataset("cifar10", _bytes_to_unit(train), _bytes_to_unit(test))


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch.

    The format is a pickled dict with ``b"data"``, uint8 ``(N, 3072)`` (each row the red,
    then green, then blue 32x32 plane, row-major), and ``b"labels"``, N ints in 0..9.

    Pickle can run arbitrary code, so the file is read with a restricted unpickler: besides
    plain data (dicts, lists, tuples, sets, bytes, str, numbers), it accepts only the few NumPy functions that
    rebuild an array (``_reconstruct``, ``_frombuffer``, ``ndarray``, ``dtype``) and
    ``_codecs.encode`` (how Python 3 pickles bytes at protocol 2), and refuses every other
    class or function.

    Parameters
    ----------
    path : str or os.PathLike
        A batch file (``data_batch_1``, ``test_batch``, ...).

    Returns
    -------
    images : numpy.ndarray of uint8, shape (N, 3, 32, 32)
    labels : numpy.ndarray of int64, shape (N,)

    Raises
    ------
    TractvqError
        If the file is missing, is not a pickle, refers to a class or function outside the
        list above, or does not hold a dict with ``b"data"`` of shape ``(N, 3072)`` and ``N``
        labels.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            batch = _DataUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError as error:
        raise TractvqError(path, "no such file") from error
    except _RefusedGlobal as error:
        raise TractvqError(path, f"refused to unpickle {error}: a CIFAR-10 batch holds only plain data") from error
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as error:
        raise TractvqError(path, f"not a CIFAR-10 python batch ({error})") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise TractvqError(path, "not a CIFAR-10 python batch (no dict with b'data' and b'labels')")
    data = batch[b"data"]
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR10_PIXELS)
    data = np.asarray(data)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR10_PIXELS:
        raise TractvqError(
            path, f"b'data' must be uint8 of shape (N, {CIFAR10_PIXELS}), got {data.dtype} {data.shape}"
        )
    if labels.shape != (len(data),):
        raise TractvqError(path, f"{len(data)} images but {labels.size} labels")
    return data.reshape(-1, 3, 32, 32), labels


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a class or function outside the allowed list."""


def _allowed_globals() -> dict[tuple[str, str], object]:
    import codecs

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy 1
        from numpy.core import multiarray, numeric

    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for package in ("numpy.core", "numpy._core"):  # NumPy 1 and NumPy 2 spell them differently
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _DataUnpickler(pickle.Unpickler):
    """An unpickler for plain data and NumPy arrays only; anything else is refused."""

    def find_class(self, module: str, name: str):
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def _bytes_to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images to float32 in [-1, 1]."""
    return images.astype(np.float32) / 127.5 - 1.0
