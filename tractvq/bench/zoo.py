"""The list of registered quantizers, as rows and as a text table (``tractvq quantizers``)."""

from __future__ import annotations

from tractvq.quantizers import available, build

__all__ = ["describe_quantizers", "format_quantizers"]


def describe_quantizers() -> list[dict]:
    """Every registered quantizer, in registration order.

    Returns
    -------
    list of dict
        ``name``, ``kind`` (``"discrete"`` or ``"continuous"``), ``description`` and
        ``reference`` of each quantizer. The kind is read from a tiny instance (D = 8,
        K = 8) of its class.
    """
    return [
        {
            "name": name,
            "kind": "discrete" if build(name, dim=8, codebook_size=8).discrete else "continuous",
            "description": description,
            "reference": reference,
        }
        for name, description, reference in available()
    ]


def format_quantizers(rows: list[dict]) -> str:
    """A plain-text table of :func:`describe_quantizers` rows: name, kind, description,
    reference, in aligned columns (no trailing newline)."""
    columns = ("name", "kind", "description", "reference")
    table = [{key: key.upper() for key in columns}, *rows]
    widths = {key: max(len(str(row[key])) for row in table) for key in columns[:-1]}
    return "\n".join(
        "  ".join(str(row[key]).ljust(widths[key]) for key in columns[:-1]) + "  " + str(row["reference"])
        for row in table
    )
