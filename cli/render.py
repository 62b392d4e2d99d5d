"""``tractvq render``: a bundle and its reconstructions as a picture (FURY, headless)."""

from __future__ import annotations

import click

from tractvq.cli.options import FiniteFloat, force_option, reference_option

# The choices of tractvq.viz.camera.VIEWS and tractvq.viz.render.COLOURINGS, written out so
# that --help does not import the library (a test checks they agree).
VIEW_CHOICES = ("sagittal", "axial", "coronal")
COLOUR_CHOICES = ("orientation", "error")

view_option = click.option("--view", type=click.Choice(VIEW_CHOICES), default="sagittal", show_default=True,
                           help="Sagittal: from the left; axial: from above; coronal: from behind.")
background_option = click.option("--background", default="white", show_default=True,
                                 help="Background: a colour name or hex code (e.g. black, '#202020').")


def check_panel_size(size, option: str = "--size") -> None:
    """A usage error unless both sides are 16 to 8192 pixels."""
    if not all(16 <= value <= 8192 for value in size):
        raise click.BadParameter(f"each side must be 16 to 8192 pixels, got {size[0]} {size[1]}", param_hint=option)


def check_background(background: str) -> None:
    """A usage error unless ``background`` is a colour (needs matplotlib)."""
    from tractvq.viz.images import parse_colour

    try:
        parse_colour(background)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--background") from error


@click.command()
@click.argument("original", metavar="INPUT", type=click.Path())
@click.argument("reconstructions", metavar="[RECON]...", nargs=-1, type=click.Path())
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Image to write (.png or .jpg).")
@click.option("--bundle", "-b", default=None, help="The bundle to draw from folders and codes files that hold several.")
@click.option("--overlay", is_flag=True, help="One panel: the reconstructions drawn over the original (grey).")
@click.option("--color", "--colour", "colouring", type=click.Choice(COLOUR_CHOICES), default="orientation",
              show_default=True, help="Orientation (RGB = |direction|) or each streamline's MDF to the original.")
@view_option
@click.option("--size", type=(int, int), default=(400, 400), show_default=True, metavar="W H", help="Pixels of one panel.")
@background_option
@click.option("--title", "titles", multiple=True, help="Panel titles, one per input in order (default: file names).")
@click.option("--error-max", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Top of the error colour scale in mm (default: the 98th percentile of the errors).")
@click.option("--interactive", is_flag=True, help="Also open a FURY window (needs a display).")
@click.option("--model", "-m", default=None, help="Decoder of codes files (default: the model they name).")
@reference_option
@force_option
def render(original, reconstructions, output, bundle, overlay, colouring, view, size, background, titles, error_max,
           interactive, model, reference, force) -> None:
    """Draw a bundle beside (or under) its reconstructions, framed automatically.

    INPUT and RECON are tractograms (.trk, .tck, .trx, ...), folders of them (pick the
    bundle with --bundle) or codes files from `tractvq encode` (decoded with their model).
    Needs the viz extra: pip install "tractvq[viz]".

    \b
    tractvq render data/sample recon/ --bundle MCP -o mcp.png
    tractvq render data/sample codes.npz --bundle MCP --color error -o mcp_error.png
    """
    from tractvq.viz import backend
    from tractvq.viz.images import check_image_path, save_image
    from tractvq.viz.render import compare_files

    if output is None and not interactive:
        raise click.UsageError("give an image to write (-o OUT.png), --interactive, or both")
    if titles and len(titles) != 1 + len(reconstructions):
        raise click.UsageError(f"--title given {len(titles)} times for {1 + len(reconstructions)} inputs")
    if colouring == "error" and not reconstructions:
        raise click.UsageError("--color error needs a reconstruction (RECON) to compare with INPUT")
    check_panel_size(size)
    if output is not None:
        check_image_path(output, force=force)
    backend.require(purpose="tractvq render")
    check_background(background)
    if interactive:
        backend.prepare_window()  # before any render: says why no window can be shown
    comparison = compare_files(original, reconstructions, bundle=bundle, reference=reference, model=model,
                               titles=titles, overlay=overlay, colouring=colouring, view=view, size=size,
                               background=background, error_max=error_max)
    if output is not None:
        click.echo(f"wrote {save_image(comparison.render(), output, force=force)}")
    if interactive:
        comparison.show()
