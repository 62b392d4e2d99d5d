"""The image-domain quantizer benchmark: one small convolutional VQ-VAE per quantizer.

Every quantizer of :mod:`tractvq.quantizers` is put, by name, in the bottleneck of the same
convolutional autoencoder (:class:`ConvAutoencoder`) and trained on the same images
(:mod:`tractvq.bench.data`: scikit-learn's digits, or CIFAR-10) with the same budget and
seed; :func:`run_benchmark` then measures each on the test images:

* ``mse``: mean squared error over every test pixel (pixels in [-1, 1]);
* ``psnr``: ``10 log10(range^2 / mse)`` in dB with ``range = 2``, from that pooled MSE
  (:func:`psnr`);
* ``perplexity`` and ``usage``: of the code histogram of *all* test latents, by
  :func:`tractvq.quantizers.codebook_stats` (NaN for continuous bottlenecks);
* ``ms_per_step``: mean wall time of a training step (forward, backward, optimizer step and
  the method's hooks), the first step left out as warm-up;
* ``train_mse``: mean reconstruction MSE of the last (up to) 50 training steps.

Method hooks
------------
A method that exposes them gets, generically (``hasattr``):

* ``set_step(step)`` before every training forward (the Gumbel temperature schedules of
  ``gumbel`` and ``gmvq``);
* ``replace_unused_codes()`` after every ``replace_every`` training steps, except at the end
  of training so that replaced codes are trained before the evaluation (the codebook
  replacement of ``nsvq``, ``diveq`` and ``sf-diveq``; their own interval, e.g. NSVQ's 1000
  batches, would never be reached in a short benchmark).

Seeding
-------
For every method the torch RNG is reset to ``seed`` before the quantizer is built and again
before the encoder and decoder are built, so every method starts from the same encoder and
decoder weights; the training batches come from ``numpy.random.default_rng(seed)``, so every
method sees the same batches. The caller's torch RNG state is restored afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from tractvq.bench.data import ImageDataset
from tractvq.quantizers import QuantizerOutput, available, build, codebook_stats

__all__ = ["COLUMNS", "ConvAutoencoder", "psnr", "run_benchmark", "train_and_evaluate"]

COLUMNS = (
    "quantizer",
    "discrete",
    "codebook_size",
    "mse",
    "psnr",
    "perplexity",
    "usage",
    "ms_per_step",
    "train_mse",
)
"""Keys of every row :func:`run_benchmark` returns, in table order."""

EVAL_BATCH = 512  # test images per evaluation batch (memory only; results do not depend on it)
TRAIN_MSE_WINDOW = 50  # last training steps averaged into train_mse


class ConvAutoencoder(nn.Module):
    """A small convolutional autoencoder with any quantizer as its bottleneck.

    The encoder downsamples by 4 with two stride-2 convolutions (8x8 digits to a 2x2 grid of
    latents, 32x32 CIFAR-10 images to 8x8); the decoder mirrors it with transposed
    convolutions. The output is linear (no squashing), trained by MSE against images in
    [-1, 1].

    Parameters
    ----------
    quantizer : tractvq.quantizers.Quantizer
        The bottleneck; its ``dim`` is the number of latent channels D.
    channels : int
        Image channels C (1 for digits, 3 for CIFAR-10).
    hidden : int, optional
        Channels of the hidden convolutions.
    """

    def __init__(self, quantizer: nn.Module, *, channels: int, hidden: int = 64):
        super().__init__()
        dim = quantizer.dim
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, hidden, 4, stride=2, padding=1),  # (B, h, H/2, W/2)
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1),  # (B, h, H/4, W/4)
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, dim, 1),  # (B, D, H/4, W/4)
        )
        self.quantizer = quantizer
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1),  # (B, h, H/4, W/4)
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1),  # (B, h, H/2, W/2)
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, channels, 4, stride=2, padding=1),  # (B, C, H, W)
        )

    def forward(self, images: Tensor) -> tuple[Tensor, QuantizerOutput]:
        """Reconstruct ``images`` ``(B, C, H, W)``.

        Returns
        -------
        reconstruction : Tensor, shape (B, C, H, W)
        output : QuantizerOutput
            The bottleneck's output on the channels-last latents ``(B, H/4, W/4, D)``.
        """
        latents = self.encoder(images).permute(0, 2, 3, 1)  # (B, h, w, D), channels last
        output = self.quantizer(latents)
        reconstruction = self.decoder(output.quantized.permute(0, 3, 1, 2))  # (B, C, H, W)
        return reconstruction, output


def psnr(mse: float, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / mse)``.

    Parameters
    ----------
    mse : float
        Mean squared error (>= 0); 0 gives ``inf``.
    data_range : float, optional
        Peak-to-peak range of the pixel values (2 for images in [-1, 1]).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``mse`` is negative or ``data_range`` is not positive.
    """
    if not mse >= 0:
        raise ValueError(f"mse must be >= 0, got {mse!r}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}")
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def run_benchmark(
    quantizers: Sequence[str],
    dataset: ImageDataset,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    codebook_size: int = 512,
    dim: int = 64,
    hidden: int = 64,
    replace_every: int | None = 100,
    options: Mapping[str, Mapping[str, object]] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train and evaluate one autoencoder per quantizer, at equal budget and seed.

    Parameters
    ----------
    quantizers : sequence of str
        Names from :func:`tractvq.quantizers.available`.
    dataset : ImageDataset
        Training and test images (:func:`~tractvq.bench.data.load_digits`,
        :func:`~tractvq.bench.data.load_cifar10`).
    steps : int, optional
        Training steps (batches) per quantizer.
    batch_size : int, optional
        Images per batch, drawn without replacement within a batch.
    lr : float, optional
        Adam learning rate.
    seed : int, optional
        Seed of the weights, of the methods' randomness and of the batches (see the module
        notes).
    codebook_size : int, optional
        Number of codes K, passed to every quantizer (FSQ takes its size from its levels).
    dim : int, optional
        Latent channels D.
    hidden : int, optional
        Channels of the hidden convolutions.
    replace_every : int or None, optional
        Call ``replace_unused_codes()`` of the methods that have it after every this many
        steps (the DiVeQ package's default interval, 100); None: never.
    options : mapping of str to mapping, optional
        Extra keywords of :func:`tractvq.quantizers.build`, by quantizer name.
    progress : bool, optional
        Show a tqdm progress bar per quantizer (on stderr).

    Returns
    -------
    list of dict
        One row per quantizer, in the given order, with the keys :data:`COLUMNS`.

    Raises
    ------
    ValueError
        If a name is unknown (the message lists the known ones), a name is repeated, or a
        budget value is out of range.
    """
    known = [name for name, _, _ in available()]
    if not quantizers:
        raise ValueError(f"no quantizer given; choose from: {', '.join(known)}")
    unknown = [name for name in quantizers if name not in known]
    if unknown:
        raise ValueError(f"unknown quantizer {', '.join(map(repr, unknown))}; choose from: {', '.join(known)}")
    repeated = sorted({name for name in quantizers if list(quantizers).count(name) > 1})
    if repeated:
        raise ValueError(f"quantizers must not repeat, got {', '.join(map(repr, repeated))} more than once")
    options = dict(options or {})
    stray = sorted(set(options) - set(quantizers))
    if stray:
        raise ValueError(f"options given for quantizers not benchmarked: {', '.join(map(repr, stray))}")
    return [
        train_and_evaluate(
            name, dataset, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
            codebook_size=codebook_size, dim=dim, hidden=hidden, replace_every=replace_every,
            options=options.get(name), progress=progress,
        )
        for name in quantizers
    ]


def train_and_evaluate(
    name: str,
    dataset: ImageDataset,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    codebook_size: int = 512,
    dim: int = 64,
    hidden: int = 64,
    replace_every: int | None = 100,
    options: Mapping[str, object] | None = None,
    progress: bool = True,
) -> dict:
    """Train one autoencoder with the quantizer ``name`` and measure it on the test images.

    Parameters are those of :func:`run_benchmark`, for one quantizer.

    Returns
    -------
    dict
        The row of ``name``: the keys :data:`COLUMNS`.
    """
    _check_budget(steps, batch_size, lr, replace_every, len(dataset.train))
    train = torch.from_numpy(np.ascontiguousarray(dataset.train, dtype=np.float32))  # (N, C, H, W)
    batches = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        quantizer = build(name, dim=dim, codebook_size=codebook_size, **dict(options or {}))
        torch.manual_seed(seed)
        model = ConvAutoencoder(quantizer, channels=train.shape[1], hidden=hidden)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        seconds, train_mse = [], []
        model.train()
        for step in tqdm(range(steps), desc=f"{name:>11}", unit="step", disable=not progress):
            images = train[torch.from_numpy(batches.choice(len(train), batch_size, replace=False))]  # (B, C, H, W)
            start = time.perf_counter()
            if hasattr(quantizer, "set_step"):
                quantizer.set_step(step)
            reconstruction, output = model(images)
            mse = (reconstruction - images).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            (mse + output.loss).backward()
            optimizer.step()
            if (
                replace_every
                and hasattr(quantizer, "replace_unused_codes")
                and (step + 1) % replace_every == 0
                and step + 1 < steps
            ):
                quantizer.replace_unused_codes()
            seconds.append(time.perf_counter() - start)
            train_mse.append(mse.item())
        metrics = evaluate(model, dataset.test, data_range=dataset.data_range)
    timed = seconds[1:] or seconds  # the first step warms up
    return {
        "quantizer": name,
        "discrete": bool(quantizer.discrete),
        "codebook_size": getattr(quantizer, "codebook_size", None) if quantizer.discrete else None,
        **metrics,
        "ms_per_step": 1000.0 * float(np.mean(timed)),
        "train_mse": float(np.mean(train_mse[-TRAIN_MSE_WINDOW:])),
    }


@torch.no_grad()
def evaluate(model: ConvAutoencoder, images: np.ndarray, *, data_range: float = 2.0) -> dict:
    """Reconstruction and code statistics of ``model`` over all of ``images``, in eval mode.

    Parameters
    ----------
    model : ConvAutoencoder
    images : numpy.ndarray, shape (N, C, H, W)
    data_range : float, optional
        Peak-to-peak range of the pixel values, for :func:`psnr`.

    Returns
    -------
    dict
        ``mse`` (pooled over every pixel), ``psnr``, and ``perplexity`` and ``usage`` of the
        histogram of all the test latents' codes (NaN if the bottleneck returns no indices).
        The model is left in eval mode.
    """
    model.eval()
    squared_error, count, indices = 0.0, 0, []
    for start in range(0, len(images), EVAL_BATCH):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + EVAL_BATCH], dtype=np.float32))
        reconstruction, output = model(batch)
        squared_error += (reconstruction - batch).double().pow(2).sum().item()
        count += batch.numel()
        if output.indices is not None:
            indices.append(output.indices.reshape(-1))
    mse = squared_error / count
    perplexity = usage = math.nan
    size = getattr(model.quantizer, "codebook_size", None)
    if indices and size:
        stats = codebook_stats(torch.cat(indices), size)
        perplexity, usage = float(stats["perplexity"]), float(stats["usage"])
    return {"mse": mse, "psnr": psnr(mse, data_range), "perplexity": perplexity, "usage": usage}


def _check_budget(steps, batch_size, lr, replace_every, n_train: int) -> None:
    for label, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if batch_size > n_train:
        raise ValueError(f"batch_size must be at most the {n_train} training images, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if replace_every is not None and (
        isinstance(replace_every, bool) or int(replace_every) != replace_every or replace_every < 1
    ):
        raise ValueError(f"replace_every must be a positive integer or None, got {replace_every!r}")
