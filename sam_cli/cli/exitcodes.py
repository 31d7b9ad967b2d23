"""Exit codes, defined once. Documented in `sam --help`, the man page and the README."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # success
    FAILURE = 1  # unexpected failure (a bug: rerun with --debug and report it)
    USAGE = 2  # bad options or prompts (malformed numbers, prompt outside the image)
    INPUT = 3  # an input file is missing or unreadable
    MODEL = 4  # the checkpoint is missing, unreadable, refused or does not fit
    PARTIAL = 5  # some inputs failed; the others were processed
    DOWNLOAD = 6  # a checkpoint download failed (network, HTTP, hash)
    OUTPUT = 7  # an output could not be written
    INTERRUPTED = 130  # stopped by Ctrl-C / SIGINT; finished outputs are kept


EXIT_CODES_HELP = "\n".join(
    f"{int(c):>3}  {c.name.lower()}"
    for c in ExitCode
)
