"""Time a forward + backward pass of every tractvq quantizer against reference packages.

Usage::

    python benchmarks/bench_quantizers.py [--vectors 16384] [--dim 64] [--codebook-size 512]
                                          [--repeats 15] [--seed 0] [--quantizer NAME ...]

On N = 16,384 random latents of D = 64 and K = 512 codes, in training mode on the CPU (torch's
default number of threads), times one step: the forward pass, a downstream loss
``sum(quantized * g)`` (g fixed random) plus the method's own loss, and the backward pass.
Timed side by side, the runs interleaved so that load on the machine affects all alike
(warm-up steps first, then ``--repeats`` rounds; best and median of each):

* every registered tractvq quantizer (``tractvq.quantizers.build(name, dim, codebook_size)``);
* vector-quantize-pytorch's ``VectorQuantize``: STE with EMA codebook
  (``rotation_trick=False``; since 1.2x the package's default is the rotation trick) and with
  ``rotation_trick=True``;
* ``diveq.DIVEQ`` (the DiVeQ authors' package), if installed;
* the floor: a plain-torch straight-through VQ written here (nearest code by one matrix
  product, codebook + 0.25 commitment loss, ``z + sg[c - z]``).

Prints a table: best and median ms, and the ratio of each best time to the floor's best. Goals:
every hard quantizer (discrete, one code per vector in training, no sampling) <= 1.2x the
floor; every soft one (Gumbel-softmax: draws N x K noise in training) <= 3x.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tractvq.quantizers import available, build

GOAL = 1.2
SOFT_GOAL = 3.0
SOFT = ("gumbel", "gmvq", "vqdiff")  # draw N x K Gumbel noise in training
WARMUP = 3


class PlainSTE(nn.Module):
    """The floor: straight-through VQ in a few lines of plain torch (van den Oord et al.)."""

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25):
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim))
        self.beta = beta

    def forward(self, latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        codebook = self.codebook
        with torch.no_grad():
            distances = (
                latents.pow(2).sum(1, keepdim=True)
                - 2 * latents @ codebook.t()
                + codebook.pow(2).sum(1)
            )  # (N, K)
            indices = distances.argmin(1)  # (N,)
        codes = F.embedding(indices, codebook)  # (N, D)
        loss = F.mse_loss(codes, latents.detach()) + self.beta * F.mse_loss(latents, codes.detach())
        return latents + (codes - latents).detach(), indices, loss


def tractvq_step(module: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    def step(latents: Tensor, target: Tensor) -> Tensor:
        output = module(latents)
        return (output.quantized * target).sum() + output.loss

    return step


def plain_step(module: PlainSTE) -> Callable[[Tensor, Tensor], Tensor]:
    def step(latents: Tensor, target: Tensor) -> Tensor:
        quantized, _, loss = module(latents)
        return (quantized * target).sum() + loss

    return step


def vector_quantize_step(module: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    def step(latents: Tensor, target: Tensor) -> Tensor:
        quantized, _, loss = module(latents[None])  # (1, N, D)
        return (quantized[0] * target).sum() + loss.sum()

    return step


def diveq_step(module: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    def step(latents: Tensor, target: Tensor) -> Tensor:
        quantized, _, _ = module(latents)
        return (quantized * target).sum()

    return step


def contenders(dim: int, codebook_size: int, names: list[str]) -> dict[str, tuple[nn.Module, Callable, str]]:
    """``label -> (module, step, kind)`` for every timed method; kind is "floor", "hard",
    "soft", "continuous" or "reference"."""
    runs = {"plain-torch STE (floor)": (PlainSTE(dim, codebook_size), plain_step, "floor")}
    for name in names:
        module = build(name, dim=dim, codebook_size=codebook_size)
        kind = "continuous" if not module.discrete else "soft" if name in SOFT else "hard"
        runs[f"tractvq {name}"] = (module, tractvq_step, kind)
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:
        print("vector-quantize-pytorch is not installed: skipped")
    else:
        for label, rotation in (("STE+EMA", False), ("rotation trick", True)):
            module = VectorQuantize(dim=dim, codebook_size=codebook_size, rotation_trick=rotation)
            runs[f"vector-quantize-pytorch {label}"] = (module, vector_quantize_step, "reference")
    try:
        import diveq
    except ImportError:
        print("diveq is not installed: skipped")
    else:
        module = diveq.DIVEQ(codebook_size, dim, allow_warning=False, verbose=False)
        runs["diveq.DIVEQ"] = (module, diveq_step, "reference")
    return {label: (module.train(), make(module), kind) for label, (module, make, kind) in runs.items()}


def time_all(runs: dict, latents: Tensor, target: Tensor, repeats: int) -> dict[str, list[float]]:
    """Seconds of each forward + backward step, ``repeats`` rounds interleaved over the methods."""
    seconds = {label: [] for label in runs}
    for round_ in range(WARMUP + repeats):
        for label, (module, step, _) in runs.items():
            latents.grad = None
            module.zero_grad(set_to_none=True)
            start = time.perf_counter()
            step(latents, target).backward()
            spent = time.perf_counter() - start
            if round_ >= WARMUP:
                seconds[label].append(spent)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=16_384)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantizer", "-q", action="append", help="tractvq quantizer to time (default: all)")
    arguments = parser.parse_args()
    names = arguments.quantizer or [name for name, _, _ in available()]
    torch.manual_seed(arguments.seed)
    runs = contenders(arguments.dim, arguments.codebook_size, names)
    latents = torch.randn(arguments.vectors, arguments.dim, requires_grad=True)  # (N, D)
    target = torch.randn(arguments.vectors, arguments.dim)  # (N, D)
    print(
        f"N = {arguments.vectors}, D = {arguments.dim}, K = {arguments.codebook_size}, "
        f"forward + backward, {arguments.repeats} rounds after {WARMUP} warm-up, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads"
    )
    seconds = time_all(runs, latents, target, arguments.repeats)
    floor = min(seconds["plain-torch STE (floor)"])
    width = max(map(len, runs))
    header = f"{'method':<{width}}  {'best ms':>8}  {'median ms':>9}  {'x floor':>7}"
    print(f"{header}  goal: hard <= {GOAL}x, soft <= {SOFT_GOAL}x")
    slow = []
    for label, (_, _, kind) in runs.items():
        best, median = min(seconds[label]), statistics.median(seconds[label])
        ratio = best / floor
        goal = {"hard": GOAL, "soft": SOFT_GOAL}.get(kind)
        verdict = kind if goal is None else f"{kind} {'ok' if ratio <= goal else 'SLOW'}"
        if verdict.endswith("SLOW"):
            slow.append(label)
        print(f"{label:<{width}}  {1000 * best:8.1f}  {1000 * median:9.1f}  {ratio:7.2f}  {verdict}")
    print(
        f"over the goal ({GOAL}x the floor hard, {SOFT_GOAL}x soft): "
        f"{', '.join(slow) if slow else 'none'}"
    )


if __name__ == "__main__":
    main()
