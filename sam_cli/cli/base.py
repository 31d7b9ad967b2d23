"""The Typer application and the command class every command uses; commands import this
module, and cli/app.py imports the commands (so no module imports another in a loop)."""

from __future__ import annotations

import re
from typing import Annotated

import typer
import typer.core
from typer.core import TyperArgument, TyperCommand

from .. import __version__
from .exitcodes import EXIT_CODES_HELP

HELP = f"""Segment Anything from the command line.

Masks from points and boxes, for one image or a whole prompt file (sam segment), every \
instance of a phrase over folders of images (sam segment --text), and every object's mask over \
folders of images (sam auto), with Meta's checkpoints: SAM 1 (vit_b, vit_l, vit_h), SAM 2.1 \
(sam2.1_hiera_tiny … _large) and SAM 3 (sam3: --text, and points and boxes).

Exit codes:

\b
{EXIT_CODES_HELP}
"""

#: `sam --help` lists the commands in this order: by how often they are reached for.
ORDER = ("segment", "auto", "eval", "edges", "merge", "export", "models", "info")


class Group(typer.core.TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


app = typer.Typer(
    name="sam", help=HELP, cls=Group, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]}, pretty_exceptions_enable=False,
)


class Command(TyperCommand):
    """A command whose usage line names a required argument as man pages do (INPUTS...), not
    in Typer's braces ({INPUTS}...), and whose arguments are listed by their metavar alone
    (INPUTS, IMAGE), without Typer's type tag (<list[str]>, <path>)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for p in self.params:
            if isinstance(p, TyperArgument):
                p.display_type_rich = lambda ctx: None

    def format_options(self, ctx, formatter) -> None:
        """Arguments, then the options in titled groups (their rich_help_panel, set once per
        group in options.py), in the order the command first lists them; the help options last."""
        groups: dict[str, list] = {}
        for param in self.get_params(ctx):
            row = param.get_help_record(ctx)
            if row is None:
                continue
            if param.param_type_name == "argument":
                title = "Arguments"
            elif param.name == "help":
                title = "Help"
            else:
                title = getattr(param, "rich_help_panel", None) or "Options"
            groups.setdefault(title, []).append(row)
        for title in sorted(groups, key=lambda t: (t != "Arguments", t == "Help")):
            with formatter.section(title):
                formatter.write_dl(groups[title])

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [re.sub(r"^\{(.+)\}", r"\1", p) for p in super().collect_usage_pieces(ctx)]


def _version(value: bool) -> None:
    if value:
        print(f"sam {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """Segment Anything from the command line."""


