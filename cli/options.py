"""Options shared by several commands."""

from __future__ import annotations

import click

reference_option = click.option(
    "--reference",
    "-r",
    type=click.Path(dir_okay=False),
    default=None,
    help="Spatial reference (NIfTI image or .trk) for formats without one (.tck, .vtk, ...).",
)
force_option = click.option("--force", "-f", is_flag=True, help="Replace an existing output.")
