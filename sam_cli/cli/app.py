"""The `sam` application: its commands (each registers itself on base.app), main(), and the
one place that maps errors to exit codes."""

from __future__ import annotations

import os
import sys

from .base import app
from .exitcodes import ExitCode


def _register() -> None:
    from . import auto, edges, evaluate, export, merge, models, segment  # noqa: F401  (commands register themselves on `app`)


_register()


def _exit_code_for(err: Exception) -> ExitCode:
    from ..device import DeviceError
    from ..errors import (
        CheckpointError,
        DownloadError,
        InputError,
        OutputError,
        PromptError,
    )

    for kind, code in (
        (PromptError, ExitCode.USAGE), (DeviceError, ExitCode.USAGE),
        (InputError, ExitCode.INPUT), (CheckpointError, ExitCode.MODEL),
        (DownloadError, ExitCode.DOWNLOAD), (OutputError, ExitCode.OUTPUT),
    ):
        if isinstance(err, kind):
            return code
    return ExitCode.USAGE


def _out_of_memory(err: Exception) -> bool:
    """torch's OutOfMemoryError (CUDA, MPS) or the host's MemoryError, without importing torch
    here: if torch raised it, torch is already loaded."""
    if isinstance(err, MemoryError):
        return True
    # torch's CPU allocator reports a failed allocation as a RuntimeError
    if isinstance(err, RuntimeError) and ("can't allocate memory" in str(err)
                                          or "not enough memory" in str(err)):
        return True
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    kinds = (getattr(torch, "OutOfMemoryError", None),  # torch >= 2.5: CUDA, MPS, XPU
             getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
    return any(k is not None and isinstance(err, k) for k in kinds)


class Interrupted(BaseException):
    """Raised by our SIGINT and SIGTERM handlers; a BaseException so no library turns it into
    another error. `code`: the exit code, 128 + the signal's number."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _on_signal(signum, frame):  # noqa: ARG001
    raise Interrupted(128 + signum)


def main(argv: list[str] | None = None) -> None:
    import signal

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    if debug:  # the root option, wherever it is given (`sam auto … --debug` too)
        args = ["--debug", *(a for a in args if a != "--debug")]
        os.environ["SAM_DEBUG"] = "1"  # what the library says only for debugging (workers too)
    if os.environ.get("NO_COLOR"):  # no-color.org: plain text, whatever else asks for colour
        os.environ.pop("FORCE_COLOR", None)
        os.environ["TERM"] = "dumb"
    # SIGTERM (timeout, docker stop, Slurm) stops a run as Ctrl-C does: finished outputs kept,
    # nothing half-written left behind
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        app(args=args, prog_name="sam")  # exits through SystemExit; usage errors give 2
    except Interrupted as e:
        print("Interrupted." if e.code == ExitCode.INTERRUPTED else "Terminated.", file=sys.stderr)
        sys.exit(e.code)
    except Exception as e:  # noqa: BLE001 - sorted below
        from .common import PipeClosed

        if isinstance(e, (BrokenPipeError, PipeClosed)):
            # the reader went away (`sam ... | head`): not an error of ours; stdout goes to
            # /dev/null so that Python's last flush of it at exit does not fail either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(ExitCode.OK)
        _fail(e, debug)


def _fail(e: Exception, debug: bool) -> None:
    """The one place that maps errors to exit codes."""
    from ..errors import SamError

    if debug:
        import traceback

        traceback.print_exc()
    if isinstance(e, SamError):
        hint = f" ({e.hint})" if e.hint else ""
        print(f"Error: {e}{hint}", file=sys.stderr)
        sys.exit(_exit_code_for(e))
    if _out_of_memory(e):
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"Error: out of memory: {first} (lower --batch-size or --points-per-batch, "
              "or use --dtype bf16 or a smaller --model)", file=sys.stderr)
        sys.exit(ExitCode.MEMORY)
    print(f"Error: unexpected {type(e).__name__}: {e} (rerun with --debug and report it)",
          file=sys.stderr)
    sys.exit(ExitCode.FAILURE)
