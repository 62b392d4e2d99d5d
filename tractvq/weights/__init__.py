"""Models shipped inside the package, by name (``tractvq encode -m NAME``).

| name | file | what |
| --- | --- | --- |
| ``default`` | ``default.pt`` | the default model (see README: how it was trained) |
| ``discrete`` | ``discrete.pt`` | the best discrete-code model |
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PACKAGED_MODELS", "packaged_model_path"]

#: Shipped model names and their files in this folder.
PACKAGED_MODELS = {"default": "default.pt", "discrete": "discrete.pt"}


def packaged_model_path(name: str) -> Path | None:
    """Path of a shipped model, or None if ``name`` is not one or its file is not installed."""
    if name not in PACKAGED_MODELS:
        return None
    path = Path(__file__).with_name(PACKAGED_MODELS[name])
    return path if path.is_file() else None
