"""Training and validation throughput of the ``paper`` and ``compact`` models on the CPU.

Usage::

    python benchmarks/bench_train.py [--threads 2] [--batch 64] [--steps 8] [--warmup 2]
        [--presets paper compact compact-grid] [--variants default channels_last compile] [--bottleneck vqdiff]

For each preset, builds every variant, then times ``--steps`` rounds after ``--warmup``
untimed ones; each round runs one training step and one validation batch of every variant in
turn (interleaved, so that a shared machine's load hits all variants alike). A training step is
what :func:`tractvq.training.train` runs: a batch of real groups of the shipped sample subject
from :class:`tractvq.data.GroupDataset`, forward, loss, backward, fused AdamW step; a
validation batch is a forward in eval mode under :func:`torch.inference_mode`. Prints the
median (and best) seconds per training step, training steps/s, training bundles (groups of 64
streamlines) per second and validation bundles per second.

Variants:

``default``
    float32, contiguous (NCHW) tensors, eager.
``channels_last``
    Model and batches in ``torch.channels_last`` memory format.
``compile``
    ``torch.compile(model)`` (inductor; needs a C++ compiler). Its one-off compile time is
    reported separately and not counted in the throughput.
``channels_last+1thread``
    ``channels_last`` on one thread instead of ``--threads`` (for machines whose cores are
    shared with other jobs, where OpenMP threads wait for each other).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: the same speed on an idle machine, and up to
# 4x faster steps when other jobs share the cores (set before torch loads OpenMP; export
# OMP_WAIT_POLICY=ACTIVE to compare).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from tractvq.bundles import group
from tractvq.data import GroupDataset, StepSampler
from tractvq.io import load
from tractvq.models.autoencoder import BundleAutoencoder
from tractvq.models.config import PRESET_NAMES, preset_config

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "sub-vqdiff" / "tractography"
BUNDLES = ("sub-vqdiff__POPT_R.trk", "sub-vqdiff__CC_Fr_1.trk")
VARIANTS = ("default", "channels_last", "compile", "channels_last+1thread")


def sample_groups(settings):
    """Real groups of the sample subject with a preset's preprocessing."""
    from tractvq.bundles import GroupedBundles

    return GroupedBundles.concatenate([group(load(SAMPLE / name), settings) for name in BUNDLES])


class Variant:
    """One preset's model in one variant, with its optimizer and a batch source."""

    def __init__(self, preset: str, variant: str, args):
        config = preset_config(preset, bottleneck=args.bottleneck)
        groups = sample_groups(config.grouping)
        self.preset, self.variant, self.batch_size = preset, variant, args.batch
        self.dataset = GroupDataset(groups)
        self.sampler = StepSampler(len(self.dataset), args.batch, seed=0)
        self.memory_format = torch.channels_last if variant.startswith("channels_last") else torch.contiguous_format
        self.threads = 1 if variant.endswith("1thread") else args.threads
        torch.manual_seed(0)
        self.model = BundleAutoencoder(replace(config, grouping=groups.settings)).to(memory_format=self.memory_format)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=2e-4, fused=True)
        self.forward = torch.compile(self.model) if variant == "compile" else self.model
        self.step = 0
        self.compile_s = float("nan")
        if variant == "compile":  # one-off: compile the training and the evaluation graphs
            began = time.perf_counter()
            self.train_step()
            self.eval_step()
            self.compile_s = time.perf_counter() - began
        self.train_times, self.eval_times = [], []

    def batch(self):
        self.step += 1
        return self.dataset.batch(self.sampler.indices(self.step)).contiguous(memory_format=self.memory_format)

    def train_step(self) -> float:
        torch.set_num_threads(self.threads)
        began = time.perf_counter()
        self.model.train()
        groups = self.batch()
        loss, _ = self.model.loss(groups, self.forward(groups))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - began

    def eval_step(self) -> float:
        torch.set_num_threads(self.threads)
        groups = self.batch()
        began = time.perf_counter()
        self.model.eval()
        with torch.inference_mode():
            self.forward(groups)
        return time.perf_counter() - began

    def row(self) -> dict:
        train_s, eval_s = statistics.median(self.train_times), statistics.median(self.eval_times)
        return {
            "preset": self.preset,
            "variant": self.variant,
            "parameters": self.model.num_parameters(),
            "step_s": train_s,
            "best_step_s": min(self.train_times),
            "steps_per_s": 1 / train_s,
            "train_bundles_per_s": self.batch_size / train_s,
            "eval_bundles_per_s": self.batch_size / eval_s,
            "compile_s": self.compile_s,
        }


def measure(preset: str, variants: list[str], args) -> list[dict]:
    """Time the variants of a preset in interleaved rounds (fair on a shared machine)."""
    built = []
    for variant in variants:
        try:
            built.append(Variant(preset, variant, args))
        except Exception as error:  # e.g. torch.compile without a working compiler
            print(f"{preset:12} {variant:14} failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}")
    for _ in range(args.warmup):
        for variant in built:
            variant.train_step()
            variant.eval_step()
    for _ in range(args.steps):
        for variant in built:
            variant.train_times.append(variant.train_step())
            variant.eval_times.append(variant.eval_step())
    return [variant.row() for variant in built]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=["paper", "compact"], choices=list(PRESET_NAMES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS[:3]), choices=VARIANTS)
    parser.add_argument("--bottleneck", default="vqdiff")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}), batch {args.batch},"
          f" bottleneck {args.bottleneck}, median of {args.steps} steps after {args.warmup}")
    header = (
        f"{'preset':12} {'variant':14} {'params':>9} {'s/step':>7} {'best':>7} {'steps/s':>8}"
        f" {'train bundles/s':>16} {'eval bundles/s':>15} {'compile s':>10}"
    )
    print(header)
    print("-" * len(header))
    for preset in args.presets:
        for row in measure(preset, args.variants, args):
            print(
                f"{row['preset']:12} {row['variant']:14} {row['parameters']:>9,} {row['step_s']:>7.3f}"
                f" {row['best_step_s']:>7.3f} {row['steps_per_s']:>8.2f} {row['train_bundles_per_s']:>16.1f}"
                f" {row['eval_bundles_per_s']:>15.1f} {row['compile_s']:>10.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
