"""Sphinx configuration of the tractvq documentation.

Build (warnings are errors, as in CI: ``tests/test_docs.py`` runs the same build)::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The pages are Markdown (MyST), so they read on GitHub too; the API pages are generated from
the numpydoc docstrings, the CLI reference from the click group.
"""

from __future__ import annotations

import re
from pathlib import Path

from tractvq._version import __version__  # tractvq must be installed (pip install -e ".[docs]")

DOCS = Path(__file__).resolve().parent

project = "tractvq"
author = "tractvq developers"
copyright = "tractvq developers, MIT licence"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_click",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# results/ holds the raw outputs (tables, plots, CSV) the pages show or link; its .md files
# are bench outputs, not pages.
exclude_patterns = ["_build", "results/**", "**/.ipynb_checkpoints"]
templates_path = []

# MyST: $...$ math (GitHub renders it too), ::: fences, anchors for [text](page.md#section).
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc + numpydoc: one page per module (docs/api/); members in source order.
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types
autosummary_generate = False  # the API tables link to the module pages; nothing is generated
numpydoc_show_class_members = False  # autodoc lists the members; no per-member stub pages
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False

html_theme = "furo"
html_title = f"tractvq {__version__}"
html_static_path = ["_static"]
html_css_files = ["tractvq.css"]

pygments_style = "sphinx"
nitpicky = False

# Pages that are written separately: listed in index.md's toctree, and dropped from it (by
# _drop_missing_optional_pages) while the file does not exist, so the -W build stays green.
OPTIONAL_PAGES = ("results", "models", "gallery")


def _drop_missing_optional_pages(app, docname: str, source: list[str]) -> None:
    if docname != root_doc:
        return
    for page in OPTIONAL_PAGES:
        if not (DOCS / f"{page}.md").exists():
            source[0] = re.sub(rf"(?m)^{page}\n", "", source[0])


def _public_names_table(app, docname: str, source: list[str]) -> None:
    """Fill api/tractvq.md with an autosummary of ``tractvq._PUBLIC`` (so it cannot go stale)."""
    if docname != "api/tractvq":
        return
    import tractvq

    entries = "\n".join(
        f"   {module.removeprefix('tractvq.')}.{name}" for name, module in tractvq._PUBLIC.items()
    )
    table = f"```{{eval-rst}}\n.. autosummary::\n   :nosignatures:\n\n{entries}\n```\n"
    source[0] = re.sub(r"<!-- api-public-names:.*?-->", lambda _: table, source[0])


# sphinx-click parses click's help texts as reStructuredText, but they are written for the
# terminal: `x` means code and a * or a trailing _ is just a character.
_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
_TRAILING_UNDERSCORE = re.compile(r"(\w)_(?=[\s.,;:)]|$)")


def _escape(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("*", "\\*").replace("|", "\\|")
    return _TRAILING_UNDERSCORE.sub(r"\1\\_", text)


def _terminal_text_to_rst(line: str) -> str:
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    if stripped.startswith(".. "):  # the directives sphinx-click writes itself
        return line
    bar = ""
    if stripped.startswith("| "):  # a click \b paragraph, written as a line block
        bar, stripped = "| ", stripped[2:]
    parts = _CODE.split(stripped)  # text, code, text, code, ..., text
    text = "".join(f"``{part}``" if i % 2 else _escape(part) for i, part in enumerate(parts))
    return indent + bar + text


def _click_help_as_text(app, ctx, lines: list[str]) -> None:
    lines[:] = [_terminal_text_to_rst(line) for line in lines]


_UNDERLINE = re.compile(r"^([-=~^])\1+$")


def _headings_to_rubrics(app, what, name, obj, options, lines: list[str]) -> None:
    """Turn the section headings left in a docstring after numpydoc ("Decisions", "Known
    deviations of reference packages", ...) into rubrics: sections of several modules on one
    page would otherwise clash as duplicate labels."""
    for i in range(len(lines) - 1):
        title, underline = lines[i].strip(), lines[i + 1].strip()
        if (
            title
            and _UNDERLINE.match(underline)
            and len(underline) >= len(title)
            and (i == 0 or not lines[i - 1].strip())
        ):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            lines[i], lines[i + 1] = f"{indent}.. rubric:: {title}", ""


def setup(app) -> None:
    app.connect("autodoc-process-docstring", _headings_to_rubrics)
    app.connect("source-read", _drop_missing_optional_pages)
    for event in ("description", "options", "arguments", "epilog"):
        app.connect(f"sphinx-click-process-{event}", _click_help_as_text)
    app.connect("source-read", _public_names_table)
