"""tractvq: vector-quantized autoencoders for whole white-matter bundles.

The public API is imported lazily, so ``import tractvq`` (and ``tractvq --help``) stays
fast; ``tractvq.load`` etc. import DIPY on first use.

The data flow, one function per arrow::

    path --load--> StatefulTractogram --group--> GroupedBundles (G, 3, S, P)
         --model.encode--> codes --model.decode--> (G, 3, S, P)
         --GroupedBundles.to_tractograms--> StatefulTractogram --save--> path

The main job in one call each: ``codes = tractvq.encode(paths)``, ``codes.save(file)``,
``tractvq.decode(tractvq.Codes.load(file))``.

Importing tractvq sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it: idle
OpenMP threads then sleep rather than spin, which is as fast on an idle machine and several
times faster when other jobs share the cores. It only takes effect if tractvq is imported
before torch starts its OpenMP runtime; set the variable yourself to choose otherwise.
"""

from __future__ import annotations

import importlib
import os

from tractvq._version import __version__

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_PUBLIC = {
    "TractvqError": "tractvq.errors",
    "TractogramError": "tractvq.errors",
    "OutputError": "tractvq.errors",
    "ModelError": "tractvq.errors",
    "load": "tractvq.io",
    "load_array": "tractvq.io",
    "save": "tractvq.io",
    "find_tractograms": "tractvq.io",
    "TractogramRecord": "tractvq.io",
    "GroupingSettings": "tractvq.bundles",
    "PAPER_SETTINGS": "tractvq.bundles",
    "GroupedBundles": "tractvq.bundles",
    "resample": "tractvq.bundles",
    "group": "tractvq.bundles",
    "summarize": "tractvq.summary",
    "prepare": "tractvq.cache",
    "load_cache": "tractvq.cache",
    "load_model": "tractvq.encoding",
    "encode": "tractvq.encoding",
    "decode": "tractvq.encoding",
    "reconstruct": "tractvq.encoding",
    "write_tractograms": "tractvq.encoding",
    "Codes": "tractvq.codes",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'tractvq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
