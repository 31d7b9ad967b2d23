"""Exit codes, defined once. `sam --help`, the man page and the README list them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    INPUT = 3
    MODEL = 4
    PARTIAL = 5
    DOWNLOAD = 6
    OUTPUT = 7
    MEMORY = 8
    INTERRUPTED = 130
    TERMINATED = 143


DESCRIPTIONS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILURE: "unexpected failure (a bug: rerun with --debug and report it)",
    ExitCode.USAGE: "usage error: bad option or value, malformed numbers, a prompt outside the "
    "image, a box with x1 < x0, an output folder made by a run with other settings",
    ExitCode.INPUT: "an input file is missing or unreadable",
    ExitCode.MODEL: "the checkpoint is missing, unreadable, refused or does not fit the model",
    ExitCode.PARTIAL: "some inputs failed (a run over many images or objects); the others were processed",
    ExitCode.DOWNLOAD: "a checkpoint download failed (network, HTTP status, hash)",
    ExitCode.OUTPUT: "an output could not be written",
    ExitCode.MEMORY: "out of memory (GPU or host): finished outputs are kept; lower --batch-size or "
    "--points-per-batch, or use --dtype bf16 or a smaller --model",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); finished outputs are kept",
    ExitCode.TERMINATED: "terminated (SIGTERM: timeout, docker stop, Slurm); finished outputs are kept",
}

def _help_lines() -> str:
    """The codes for `sam --help`, each description wrapped under its own start (78 columns
    with click's indent)."""
    import textwrap

    return "\n".join(textwrap.fill(DESCRIPTIONS[c], width=72, initial_indent=f"{int(c):>3}  ",
                                   subsequent_indent=" " * 5) for c in ExitCode)


EXIT_CODES_HELP = _help_lines()
