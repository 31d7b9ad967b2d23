"""Where a run's outputs go and how they are written, from the format registry: per image,
each requested format's files under OUT, named after the image's output key; per run, the
formats' end-of-run steps. An image counts as done exactly when all its outputs exist (each
is written under a temporary name and renamed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from ..errors import OutputError, PromptError
from ..inputs import RUN_RECORD
from ..masks import MaskRecord, PromptedMask
from . import writers
from .formats import FORMATS, FormatOptions, ImageOutput


def markers_of(mod, base: Path) -> list[Path]:
    """A format's files whose presence says an image's outputs are whole (its `markers`, else
    its outputs)."""
    return mod.markers(base) if hasattr(mod, "markers") else mod.outputs(base)


class OutputLayout:
    """The outputs of `formats` (names in FORMATS) under the folder `root`."""

    def __init__(self, root: Path, formats: tuple[str, ...], *, prompted: bool = False,
                 options: FormatOptions | None = None, own: dict | None = None) -> None:
        """prompted: the records are PromptedMasks (`sam segment --prompts`); options: the
        formats' settings; own: a command's own outputs, by name, each an object with a format
        module's functions (`sam edges`' edge maps), beside or instead of the registry's."""
        self.root = Path(root)
        self.prompted = prompted
        self.options = options or FormatOptions()
        # fail before any image is read or the model loaded, not once per image
        writers.check_folder_writable(self.root)
        self.formats = formats
        self.modules: dict[str, ModuleType] = {}
        for name in formats:  # each format after the ones it reads
            self._add(name)
        self.modules.update(own or {})

    def _add(self, name: str) -> None:
        if name in self.modules:
            return
        if name not in FORMATS:
            raise ValueError(f"unknown format {name!r}")
        mod = FORMATS[name].load()
        for dep in getattr(mod, "REQUIRES", ()):
            self._add(dep)
        self.modules[name] = mod

    def outputs(self, rel: str) -> list[Path]:
        """Every per-image output of the image whose output key is `rel` ("a/x.jpg")."""
        base = self.root / rel
        return [p for mod in self.modules.values() for p in mod.outputs(base)]

    @property
    def where(self) -> str:
        """The output folder as the user named it (a bucket layout: its URL)."""
        return str(self.root)

    def shown(self, rel: str) -> list[str]:
        """outputs(rel) as the user finds them (a bucket layout: their URLs)."""
        return [str(p) for p in self.outputs(rel)]

    def publish(self, path: Path) -> str:
        """Make a file written under root outside the formats (a shard record) the output
        folder's; returns where it is, as the user finds it."""
        return str(path)

    def markers(self, rel: str) -> list[Path]:
        """The files whose presence says an earlier run left all of rel's outputs whole."""
        base = self.root / rel
        return [p for mod in self.modules.values() for p in markers_of(mod, base)]

    def is_complete(self, rel: str) -> bool:
        return all(p.is_file() for p in self.markers(rel))

    def count(self, rel: str) -> int | None:
        """How many masks the outputs of an earlier run hold for this image, from the first
        format that can tell (png's metadata.csv, coco-rle's JSON); None if none can."""
        base = self.root / rel
        for mod in self.modules.values():
            n = mod.count(base) if hasattr(mod, "count") else None
            if n is not None:
                return n
        return None

    def write(self, rel: str, image: np.ndarray, records: list[MaskRecord] | list[PromptedMask],
              image_id: int | None = None, source: Path | None = None) -> list[str]:
        """Write every per-image output; returns their paths. source: the image file read."""
        img = ImageOutput(self.root / rel, rel, image, records, image_id, self.prompted, self.options, source)
        for mod in self.modules.values():
            mod.write(img)
        return self.shown(rel)

    def claim(self, record: dict, overwrite: bool) -> Callable[[], None]:
        """Check the folder's run record against this run's, before anything is decided or
        written: outputs made by other settings, weights or sam are never taken as this run's.
        Raises PromptError (a usage error) naming what differs unless `overwrite`; writes the
        record when it is new or changed. A folder with no record is taken as it is.
        Returns what undoes the claim (the record as it was, the folder removed if this made
        it and it is empty), for a run that stops before writing anything: the model did not
        load, say. A retry with other weights is then not refused over a folder with no
        outputs."""
        path = self.root / RUN_RECORD
        try:
            old = json.loads(path.read_text())
        except FileNotFoundError:
            old = None
        except (OSError, ValueError) as e:
            raise OutputError(f"{path}: cannot read this folder's run record ({e})") from None
        if old == record:
            return lambda: None
        if old is not None and not overwrite:
            raise PromptError(
                f"{self.where}: its outputs were made by another run ({_differences(old, record)})",
                hint="add --overwrite to redo them with these settings, or choose another -o",
            )
        made = not self.root.exists()
        writers.write_json(path, record)

        def undo() -> None:
            try:
                if old is None:
                    path.unlink(missing_ok=True)
                    if made:
                        self.root.rmdir()  # only if empty: OSError otherwise
                else:
                    writers.write_json(path, old)
            except OSError:
                pass
        return undo

    def remove_stale_temps(self) -> list[Path]:
        """Temporary files that killed writers left in the folder (io.writers)."""
        if not self.root.is_dir():
            return []
        folders = tuple(s for mod in self.modules.values() if (s := getattr(mod, "FOLDER_SUFFIX", None)))
        return writers.remove_stale_temps(self.root, skip_dirs=folders)

    def run_level(self) -> list[str]:
        """The formats (and own outputs) with an end-of-run step (coco.json), in order."""
        return [name for name, mod in self.modules.items() if hasattr(mod, "finish")]

    def finish_one(self, name: str, rels: list[str]) -> tuple[Path, str]:
        """One end-of-run step (coco.json), over the output keys of the run's images, taken in
        sorted order (so the outputs depend on the set of images alone, as a merge of shards
        gives it: shards.py): its path and its note for the user ("" if none). Each writes
        its files whole or not at all (io.writers)."""
        res = self.modules[name].finish(self.root, sorted(set(rels)), self.options)
        return res if isinstance(res, tuple) else (res, "")

    def finish(self, rels: list[str]) -> list[tuple[Path, str]]:
        """Every end-of-run step (finish_one), stopping at the first error."""
        return [self.finish_one(name, rels) for name in self.run_level()]


def _differences(old: dict, new: dict) -> str:
    """'--pred-iou-thresh 0.88 there, 0.5 now; …' for the keys of two run records that differ."""
    parts = []
    for key in dict.fromkeys([*old, *new]):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            parts += [f"--{k.replace('_', '-')} {a.get(k)} there, {b.get(k)} now"
                      for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
        elif a != b:
            parts.append(f"{key}: {a} there, {b} now")
    return "; ".join(parts)
