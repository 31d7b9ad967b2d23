"""`sam models`: list, download and verify checkpoints; `sam info`: the environment."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .base import Command, app
from .exitcodes import ExitCode
from .options import ModelNamesArg as NamesArg
from .options import QuietOpt

models_app = typer.Typer(
    help="List, download and verify model checkpoints (the cache is $SAM_CACHE_DIR or ~/.cache/sam).",
    short_help="List, download and verify checkpoints.",
    no_args_is_help=False, invoke_without_command=True, rich_markup_mode=None,
    epilog="Examples:\n\n\b\n  sam models\n  sam models download vit_h\n  sam models verify",
)
app.add_typer(models_app, name="models")

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")]


def _check(names: list[str] | None) -> list[str]:
    from ..errors import PromptError
    from ..registry import MODELS

    names = names or list(MODELS)
    for n in names:
        if n not in MODELS:
            raise PromptError(f"unknown model {n!r}: choose from {', '.join(MODELS)}")
    return names


@models_app.callback()
def models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the model types, what is cached, sizes and whether verified."""
    if ctx.invoked_subcommand is not None:
        return
    from ..fetch import cache_status
    from ..registry import DEFAULT_MODEL, MODELS

    rows = []
    for name, m in MODELS.items():
        st = cache_status(m)
        rows.append({**st, "default": name == DEFAULT_MODEL, "params_m": m.params_m,
                     "download_bytes": m.weights.size})
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    w = max(len(r["model"]) for r in rows) + 2
    print(f"{'model':<{w}}{'params':>8}{'size':>10}  {'cached':<8}{'verified':<10}file")
    for r in rows:
        size = f"{r['download_bytes'] / 1e6:,.0f} MB" if r["download_bytes"] else "gated"  # sizes Meta publishes
        flag = " (default)" if r["default"] else ""
        print(f"{r['model']:<{w}}{r['params_m']:>7.0f}M{size:>10}  {'yes' if r['cached'] else 'no':<8}"
              f"{'yes' if r['verified'] else 'no':<10}{r['file']}{flag}")


@models_app.command(cls=Command, epilog="Examples:\n\n\b\n  sam models download vit_h   # before a job, "
                    "or on a machine with network\n  sam models download         # every model")
def download(names: NamesArg = None, quiet: QuietOpt = False) -> None:
    """Download checkpoints into the cache (resumes a partial download; checks sha256)."""
    from ..fetch import download as fetch
    from ..fetch import from_hub, hf_token
    from ..registry import MODELS
    from .common import download_progress, message

    for n in _check(names):
        if not names and from_hub(MODELS[n]) and hf_token() is None:  # every model: the gated one when it can be
            message(f"{n}: skipped: gated on Hugging Face (set HF_TOKEN, then `sam models download {n}`)", quiet)
            continue
        path = fetch(MODELS[n], progress=download_progress(quiet), replace=True)
        message(f"{n}: {path}", quiet)


@models_app.command(cls=Command, epilog="Examples:\n\n\b\n  sam models verify           # every cached checkpoint\n"
                    "  sam models verify vit_b     # one (exit 4 if it does not match)")
def verify(names: NamesArg = None) -> None:
    """Hash cached checkpoints again against the expected sha256 (exit 4 on a mismatch)."""
    from ..fetch import cache_dir, cached_path, verify_cached
    from ..registry import MODELS

    bad = checked = 0
    for n in _check(names):
        if not cached_path(MODELS[n]).is_file():
            if names:
                print(f"{n}: not downloaded")
                bad += 1
            continue
        ok = verify_cached(MODELS[n])
        print(f"{n}: {'ok' if ok else 'MISMATCH'} {cached_path(MODELS[n])}")
        bad += not ok
        checked += 1
    if not names and not checked:
        print(f"no checkpoints in the cache ({cache_dir()})")
    if bad:
        raise typer.Exit(ExitCode.MODEL)


@app.command(cls=Command, short_help="Versions, the device auto picks, threads, the cache.",
             epilog="Examples:\n\n\b\n  sam info\n  sam info --json | jq .device")
def info(as_json: JsonOpt = False) -> None:
    """Print versions, the device `--device auto` picks, threads and the cache folder."""
    from ..device import environment_info

    data = environment_info()
    if as_json:
        print(json.dumps(data))
        return
    for k, v in data.items():
        print(f"{k:<9}{v}")
