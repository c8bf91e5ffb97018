"""The ``vl`` click group (installed as ``vlcore.cli``; on disk ``cli/``).  Command modules add
their commands to :data:`cli`; :mod:`.main` imports them all and is the console script."""
from __future__ import annotations

import click

from vlcore import __version__
from vlcore.core.kinds import KINDS

from .command import VLCommand, VLContext
from .options import setup_logging
from .params import installed, registry_problem


class VLGroup(click.Group):
    """Adds the installed components to ``vl --help``."""

    context_class = VLContext
    command_class = VLCommand
    group_class = type  # subgroups are VLGroups too

    def format_epilog(self, ctx, formatter):
        with formatter.section("Installed components"):
            problem = registry_problem()
            if problem:
                formatter.write_text(f"(cannot be listed: {problem}) Run `vl plugins`, or set VL_LOAD_PLUGINS "
                                     f"to the packages to load (e.g. VL_LOAD_PLUGINS=vlcore).")
            else:
                formatter.write_dl([(kind.plural, ", ".join(installed(name)) or "(none)")
                                    for name, kind in KINDS.items()])
        formatter.write_paragraph()
        formatter.write_text("Start with `vl demo` (no flags, no download). `vl COMMAND --help` for details.")


@click.group(cls=VLGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vl")
@click.option("-v", "--verbose", count=True, show_default="warnings only", help="More log output (-v info, -vv debug).")
def cli(verbose):
    """vlcore: vision-language dataset distillation.

    Distil an image-caption dataset into a few synthetic pairs (bi-trajectory matching, LoRA
    matching, LoRS, RepBlend), select coresets of real pairs, and evaluate either by training fresh
    CLIP-style models on them and measuring image-text retrieval.  `vl experts`, `vl distill` and
    `vl run` also run across processes and GPUs under torchrun.
    """
    setup_logging(verbose)
