"""Benchmarks of the quantizer zoo outside the tractogram domain.

* :mod:`tractvq.bench.data`: the image data sets (scikit-learn's digits, CIFAR-10 python
  batches), as float32 arrays in [-1, 1];
* :mod:`tractvq.bench.digits`: a small convolutional VQ-VAE per quantizer, trained at equal
  budget and seed, measured on the test images (:func:`~tractvq.bench.digits.run_benchmark`);
* :mod:`tractvq.bench.report`: the results as CSV, Markdown and a bar plot;
* :mod:`tractvq.bench.zoo`: the list of quantizers of ``tractvq quantizers``.

Importing this package imports torch; the command line imports it only inside its commands.
"""

from tractvq.bench.data import ImageDataset, load_cifar10, load_digits, read_cifar10_batch
from tractvq.bench.digits import COLUMNS, ConvAutoencoder, psnr, run_benchmark, train_and_evaluate
from tractvq.bench.report import format_markdown, plot_results, write_csv, write_results
from tractvq.bench.zoo import describe_quantizers, format_quantizers

__all__ = [
    "COLUMNS",
    "ConvAutoencoder",
    "ImageDataset",
    "describe_quantizers",
    "format_markdown",
    "format_quantizers",
    "load_cifar10",
    "load_digits",
    "plot_results",
    "psnr",
    "read_cifar10_batch",
    "run_benchmark",
    "train_and_evaluate",
    "write_csv",
    "write_results",
]
