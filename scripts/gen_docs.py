"""Generate man/sam.1 and completions/ (bash, zsh, fish) from the live Typer app.

    python scripts/gen_docs.py          # write them
    python scripts/gen_docs.py --check  # exit 1 if the committed files are stale

The completion scripts are static: TAB never starts Python, so it answers at once.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sam_cli import __version__  # noqa: E402
from sam_cli.cli.exitcodes import DESCRIPTIONS  # noqa: E402

ENVIRONMENT = [
    ("SAM_CACHE_DIR", "Checkpoint cache folder (default: $XDG_CACHE_HOME/sam, else ~/.cache/sam)."),
    ("SAM_BASE_URL", "Base URL checkpoints are downloaded from (a mirror; default Meta's)."),
    ("SAM_SHA256_VIT_B, SAM_SHA256_VIT_L, SAM_SHA256_VIT_H",
     "Expected sha256 of a mirror's file, where it serves other weights than Meta's."),
    ("SAM_EMBEDDING_CACHE", "Folder of image embeddings that sam segment and sam auto reuse "
     "(the same as --embedding-cache)."),
    ("SAM_THREADS", "CPU threads for inference (default: all cores)."),
    ("SAM_MAX_PIXELS", "Largest image, in pixels, that sam reads (the same as --max-pixels; "
     "default 200000000)."),
    ("SAM_MALLOC", "system: leave glibc's malloc thresholds alone (by default sam raises them "
     "so that large freed blocks are reused; skipped when MALLOC_*, GLIBC_TUNABLES or "
     "LD_PRELOAD is set)."),
    ("SAM_SHARD_COUNT", "With JOB_COMPLETION_INDEX (a Kubernetes Indexed Job's pod): the Job's completions; "
     "a run over many images (sam auto, sam segment --prompts, sam edges, sam eval) then processes shard "
     "JOB_COMPLETION_INDEX of SAM_SHARD_COUNT "
     "(--shard). In a Slurm array, SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (from "
     "SLURM_ARRAY_TASK_MIN, in steps of SLURM_ARRAY_TASK_STEP) give the shard."),
    ("NO_COLOR", "No colour in help and messages."),
]
EXAMPLES = [
    ("Segment the object under a click:", "sam segment photo.jpg --point 320,240 -o mask.png"),
    ("Two objects from two boxes, as COCO RLE, with a picture:",
     "sam segment photo.jpg --box 10,20,300,400 --box 320,40,600,380 -o masks.json --overlay look.jpg"),
    ("Every object's mask for a folder of photos:", "sam auto photos/ -o masks/"),
    ("A COCO dataset from paths on stdin:", "find photos -name '*.jpg' | sam auto - -o out --format coco"),
    ("Fetch the best model before a job:", "sam models download vit_h"),
    ("Click again on the same photo without running the image encoder again:",
     "sam segment photo.jpg --point 100,80 -o mask2.png --embedding-cache ~/.cache/sam/embeddings"),
]


@dataclass
class Opt:
    names: list[str]
    metavar: str | None
    help: str
    flag: bool
    default: object = None
    choices: list[str] = field(default_factory=list)
    path: bool = False
    panel: str = "Options"  # its titled group in --help
    name: str = ""  # the parameter's name


@dataclass
class Cmd:
    path: list[str]
    help: str
    options: list[Opt]
    args: list[tuple[str, str, bool]]  # name, help, is_path
    subcommands: list[Cmd]


def _choices(param) -> list[str]:
    """The values offered for an option's argument (model names, devices, formats)."""
    from sam_cli.cli.options import CHOICES

    return list(CHOICES[param.name]()) if param.name in CHOICES else []


PATH_PARAMS = {"checkpoint", "mask_input", "overlay", "logits", "image", "output", "inputs"}


def _is_path(param) -> bool:
    return param.name in PATH_PARAMS


def walk(cmd, path: list[str]) -> Cmd:
    opts, args = [], []
    for p in cmd.params:
        if getattr(p, "hidden", False) or p.name in ("install_completion", "show_completion"):
            continue
        if type(p).__name__.endswith("Argument"):
            args.append((p.name, getattr(p, "help", "") or "", _is_path(p)))
            continue
        names = sorted(p.opts + p.secondary_opts, key=lambda s: (not s.startswith("--"), s))
        flag = bool(getattr(p, "is_flag", False))
        shown = not flag and getattr(p, "show_default", None) is not False and p.default not in ("", None)
        opts.append(Opt(names, p.metavar, p.help or "", flag, p.default if shown else None,
                        _choices(p), _is_path(p), getattr(p, "rich_help_panel", None) or "Options", p.name))
    opts.append(Opt(["--help", "-h"], None, "Show the help and exit.", True, panel="Help"))
    subs = [walk(c, path + [name]) for name, c in getattr(cmd, "commands", {}).items()]
    return Cmd(path, (cmd.help or "").strip(), opts, args, subs)


def app_tree() -> Cmd:
    import typer.main

    from sam_cli.cli.app import app

    return walk(typer.main.get_command(app), ["sam"])


# ------------------------------------------------------------------------------ man page


ASCII = {"×": "x", "…": "...", "±": "+/-", "²": "^2", "→": "->", "—": "-", "–": "-", "’": "'"}


def roff(text: str) -> str:
    for k, v in ASCII.items():
        text = text.replace(k, v)
    out = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in out.splitlines():
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def first_para(text: str) -> str:
    return text.split("\n\n")[0].replace("\n", " ").strip()


#: The man page's date (.TH): when its text last changed; a fixed string, so --check is stable.
MAN_DATE = "2026-12-07"


def man_page(tree: Cmd) -> str:
    out = [
        f'.TH SAM 1 "{MAN_DATE}" "sam {__version__}" "User Commands"',
        ".SH NAME",
        "sam \\- Segment Anything masks from the command line",
        ".SH SYNOPSIS",
    ]
    for k, c in enumerate(tree.subcommands):
        args = " ".join(f"\\fI{a[0].upper()}\\fR" for a in c.args)
        sub = "|".join(s.path[-1] for s in c.subcommands)
        out.append(f".B sam {c.path[-1]}\n[\\fIOPTIONS\\fR] {args}{(' [' + sub + ']') if sub else ''}".rstrip())
        if k < len(tree.subcommands) - 1:
            out.append(".br")
    out += [
        ".SH DESCRIPTION",
        roff("sam gives Segment Anything (SAM) masks for one image (sam segment) and every object's "
             "mask over folders of images (sam auto), with Meta's checkpoints: SAM 1's vit_b (the default), "
             "vit_l and vit_h, and SAM 2.1's Hiera models, which it downloads, verifies and caches on first use. Data goes to "
             "stdout (JSON Lines, or a PNG with -o -); messages and progress go to stderr."),
        ".SH GLOBAL OPTIONS",
    ]
    out += opt_lines(tree.options)
    out.append(".SH COMMANDS")
    for c in tree.subcommands:
        out += command_lines(c)
    out.append(".SH EXIT STATUS")
    for code, text in DESCRIPTIONS.items():
        out += [".TP", f".B {int(code)}", roff(text)]
    out.append(".SH ENVIRONMENT")
    for name, text in ENVIRONMENT:
        out += [".TP", f".B {roff(name)}", roff(text)]
    out += [".SH FILES", ".TP", ".I ~/.cache/sam/",
            roff("Downloaded checkpoints (NAME.pth), partial downloads (NAME.pth.part) and "
                 "verification stamps (NAME.pth.sha256)."),
            ".SH EXAMPLES"]
    for k, (text, cmd) in enumerate(EXAMPLES):
        out += ([".PP"] if k else []) + [roff(text), ".PP", ".RS 4", ".nf", roff(cmd), ".fi", ".RE"]
    out += [".SH SEE ALSO", "The README of the sam repository, and its docs/ folder."]
    return "\n".join(line.rstrip() for text in out for line in text.split("\n")) + "\n"


def opt_lines(opts: list[Opt], panels: bool = False) -> list[str]:
    """Each option as a tagged paragraph; with panels, under its group's title (as --help)."""
    out: list[str] = []
    last = None
    order = list(dict.fromkeys(o.panel for o in opts))
    for o in sorted(opts, key=lambda o: order.index(o.panel)) if panels else opts:
        if panels and o.panel != last:
            out += [".PP", f"\\fI{roff(o.panel)}:\\fR"]
        last = o.panel
        names = ", ".join(f"\\fB{roff(n)}\\fR" for n in o.names)
        meta = "" if o.flag else f" \\fI{roff(o.metavar or 'VALUE')}\\fR"
        text = first_para(o.help)
        if o.default not in (None, [], ()):
            d = o.default
            text += f" Default: {round(d, 4) if isinstance(d, float) else d}."
        out += [".TP", names + meta, roff(text)]
    return out


def command_lines(c: Cmd) -> list[str]:
    out = [".SS " + roff(" ".join(c.path)), roff(first_para(c.help))]
    for name, help_, _ in c.args:
        out += [".TP", f"\\fI{name.upper()}\\fR", roff(help_)]
    out += opt_lines(c.options, panels=True)
    for s in c.subcommands:
        out += command_lines(s)
    return out


# ----------------------------------------------------------------------------- completions


def flat(tree: Cmd) -> list[Cmd]:
    out = [tree]
    for s in tree.subcommands:
        out += flat(s)
    return out


def value_cases(tree: Cmd, style: str) -> list[str]:
    """`case` arms completing an option's value: choices, files, or nothing."""
    seen: dict[str, str] = {}
    for c in flat(tree):
        for o in c.options:
            if o.flag:
                continue
            pat = "|".join(o.names)
            if o.choices:
                seen[pat] = ("choices", " ".join(o.choices))
            elif o.path:
                seen[pat] = ("files", "")
            else:
                seen[pat] = ("none", "")
    lines = []
    for pat, (kind, words) in seen.items():
        if style == "bash":
            action = {"choices": f'COMPREPLY=($(compgen -W "{words}" -- "$cur"))',
                      "files": 'COMPREPLY=($(compgen -f -- "$cur"))', "none": "COMPREPLY=()"}[kind]
        else:
            action = {"choices": f"compadd -- {words}", "files": "_files", "none": ":"}[kind]
        lines.append(f"        {pat}) {action}; return ;;")
    return lines


def command_cases(tree: Cmd, style: str) -> list[str]:
    lines = []
    for c in flat(tree):
        key = " ".join(c.path[1:])
        opts = " ".join(n for o in c.options for n in o.names if n.startswith("--"))
        subs = " ".join(s.path[-1] for s in c.subcommands)
        path_arg = any(a[2] for a in c.args)
        if style == "bash":
            words = f'COMPREPLY=($(compgen -W "{opts}" -- "$cur"))'
            rest = (f'COMPREPLY=($(compgen -W "{subs}" -- "$cur"))' if subs else
                    'COMPREPLY=($(compgen -f -- "$cur"))' if path_arg or c.args else "COMPREPLY=()")
        else:
            words = f"compadd -- {opts}"
            rest = f"compadd -- {subs}" if subs else "_files" if path_arg or c.args else ":"
        lines.append(f'        "{key}") if [[ $cur == -* ]]; then {words}; else {rest}; fi ;;')
    return lines


SHELLS = {
    # style: (header, current word, previous word, first word index, last index, footer)
    "bash": ("# bash completion for sam (generated by scripts/gen_docs.py; do not edit)",
             "COMP_WORDS[COMP_CWORD]", "COMP_WORDS[COMP_CWORD-1]", "1", "COMP_CWORD", "COMP_WORDS[i]",
             "complete -o filenames -o bashdefault -F _sam sam"),
    "zsh": ("#compdef sam\n# zsh completion for sam (generated by scripts/gen_docs.py; do not edit)",
            "words[CURRENT]", "words[CURRENT-1]", "2", "CURRENT", "words[i]",
            "if (( $+functions[compdef] )); then compdef _sam sam; fi"),
}


def posix_shell_script(tree: Cmd, style: str) -> str:
    """bash and zsh share one function body; they differ in how the words are read and how
    candidates are offered (value_cases / command_cases)."""
    header, cur, prev, first, last, word, footer = SHELLS[style]
    groups = " ".join(" ".join(c.path[1:]) for c in flat(tree) if c.subcommands and len(c.path) > 1)
    return f"""{header}
_sam() {{
    local cur="${{{cur}}}" prev="${{{prev}}}" cmd="" i w
    for ((i = {first}; i < {last}; i++)); do
        w="${{{word}}}"
        [[ $w == -* ]] && continue
        if [[ -z $cmd ]]; then cmd="$w"
        elif [[ " {groups} " == *" $cmd "* ]]; then cmd="$cmd $w"; break
        else break; fi
    done
    case "$prev" in
{chr(10).join(value_cases(tree, style))}
    esac
    case "$cmd" in
{chr(10).join(command_cases(tree, style))}
    esac
}}
{footer}
"""


def fish_script(tree: Cmd) -> str:
    def esc(s: str) -> str:
        return first_para(s).replace("'", "\\'")[:80]

    out = ["# fish completion for sam (generated by scripts/gen_docs.py; do not edit)",
           "complete -c sam -f"]
    for o in tree.options:
        out.append(_fish_opt("__fish_use_subcommand", o, esc))
    for c in tree.subcommands:
        out.append(f"complete -c sam -n __fish_use_subcommand -a {c.path[-1]} -d '{esc(c.help)}'")
        cond = f"__fish_seen_subcommand_from {c.path[-1]}"
        for s in c.subcommands:
            out.append(f"complete -c sam -n '{cond}' -a {s.path[-1]} -d '{esc(s.help)}'")
            for o in s.options:
                out.append(_fish_opt(f"{cond}; and __fish_seen_subcommand_from {s.path[-1]}", o, esc))
        if any(a[2] for a in c.args) or (c.args and not c.subcommands):
            out.append(f"complete -c sam -n '{cond}' -F")
        for o in c.options:
            out.append(_fish_opt(cond, o, esc))
    return "\n".join(out) + "\n"


def _fish_opt(cond: str, o: Opt, esc) -> str:
    parts = [f"complete -c sam -n '{cond}'"]
    for n in o.names:
        parts.append(f"-l {n[2:]}" if n.startswith("--") else f"-s {n[1:]}")
    if not o.flag:
        parts.append("-r" if o.path else "-x")
        if o.choices:  # a line per value, each with its own description (not the option's help)
            return "\n".join(" ".join(parts + [f"-a '{v}'", f"-d '{esc(_choice_help(o.name, v))}'"])
                             for v in o.choices)
        if o.path:
            parts.append("-F")
    parts.append(f"-d '{esc(o.help)}'")
    return " ".join(parts)


def _choice_help(param: str, value: str) -> str:
    """What one value of an option with choices is, for a completion menu."""
    from sam_cli.io.formats import FORMATS
    from sam_cli.registry import MODELS

    if param == "fmt" and value in FORMATS:
        return FORMATS[value].summary
    if param in ("model", "names") and value in MODELS:
        m = MODELS[value]
        return f"{m.family}, {m.params_m:g}M parameters, {m.weights.size / 1e6:.0f} MB"
    return value


def outputs() -> dict[Path, str]:
    tree = app_tree()
    return {
        REPO / "man" / "sam.1": man_page(tree),
        REPO / "completions" / "sam.bash": posix_shell_script(tree, "bash"),
        REPO / "completions" / "_sam": posix_shell_script(tree, "zsh"),
        REPO / "completions" / "sam.fish": fish_script(tree),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    a = ap.parse_args()
    stale = []
    for path, text in outputs().items():
        if a.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(REPO)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale (run python scripts/gen_docs.py): " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
