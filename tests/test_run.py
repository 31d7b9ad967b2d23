"""The run engine (sam_cli/run.py) with fake items and a fake model: what it decides before
any model work, the order and kinds of its events, failures, Ctrl-C, events as they happen,
and a format added through the registry alone."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from sam_cli.errors import InputError
from sam_cli.inputs import InputItem
from sam_cli.io import formats
from sam_cli.io.outputs import OutputLayout
from sam_cli.run import Runner, RunOutput


def _txt_outputs(base: Path) -> list[Path]:
    return [base.with_name(base.name + ".txt")]


def _txt_write(img) -> None:
    from sam_cli.io.writers import atomic_write_bytes

    h, w = img.image.shape[:2]
    atomic_write_bytes(_txt_outputs(img.base)[0], f"{img.file_name} {w}x{h} {len(img.records)}\n".encode())


def _txt_finish(root: Path, rels: list[str], options=None) -> Path:
    path = root / "index.txt"
    path.write_text("".join(r + "\n" for r in rels))
    return path


@pytest.fixture
def txt_format(monkeypatch):
    """A format that exists only here: a module and a registry entry, nothing else."""
    mod = types.ModuleType("sam_test_txt_format")
    mod.outputs, mod.write, mod.finish = _txt_outputs, _txt_write, _txt_finish
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(formats.FORMATS, "txt", formats.FormatSpec("txt", "x.jpg.txt", mod.__name__))
    return "txt"


@dataclass
class FakeResult:
    item: InputItem
    image: np.ndarray | None
    records: list = field(default_factory=list)
    error: InputError | None = None
    seconds: float = 0.5


class FakeEngine:
    """Gives every image 3 'masks' (none: the txt format only counts them), fails files named
    bad*, and raises KeyboardInterrupt at a file named stop*, as Ctrl-C would."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.closed = False

    def __call__(self, jobs):
        for job in jobs:
            if not isinstance(job, InputItem):
                yield job  # the runner's own decisions come back in their place
                continue
            self.seen.append(job.rel)
            name = Path(job.rel).name
            if name.startswith("stop"):
                raise KeyboardInterrupt
            if name.startswith("bad"):
                yield FakeResult(job, None, error=InputError(f"{job.path}: cannot read image"))
            else:
                yield FakeResult(job, np.zeros((4, 6, 3), np.uint8), [object()] * 3)

    def close(self) -> None:
        self.closed = True


def files(root: Path, *names: str) -> list[InputItem]:
    out = []
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"pixels")
        out.append(InputItem(p, n))
    return out


def run(runner: Runner, items, engine: FakeEngine | None = None):
    """The events, and the engine if the runner made one."""
    events = []
    runner.run(items, lambda: engine or FakeEngine(), events.append)
    return events, runner.engine


def test_events_in_input_order_with_outputs_and_the_end_of_run_step(tmp_path, txt_format):
    items = files(tmp_path / "in", "a.jpg", "b/c.png", "bad.jpg", "d.jpg")
    runner = Runner(OutputLayout(tmp_path / "out", (txt_format,)))
    events, engine = run(runner, items)
    assert [type(e).__name__ for e in events] == ["Done", "Done", "Failed", "Done", "RunOutputStarted", "RunOutput"]
    assert [e.item.rel for e in events[:4]] == ["a.jpg", "b/c.png", "bad.jpg", "d.jpg"]
    assert events[0].outputs == [str(tmp_path / "out/a.jpg.txt")] and events[0].masks == 3
    assert (tmp_path / "out/b/c.png.txt").read_text() == "b/c.png 6x4 3\n"
    assert str(events[2].error).endswith("bad.jpg: cannot read image")
    assert events[5] == RunOutput(tmp_path / "out/index.txt")
    assert (tmp_path / "out/index.txt").read_text() == "a.jpg\nb/c.png\nd.jpg\n"
    assert (runner.counts.done, runner.counts.skipped, runner.counts.failed) == (3, 0, 1)
    assert engine.closed


def test_decisions_come_before_any_model_work(tmp_path, txt_format):
    """A collision, a missing file and a file named twice never reach the engine; images whose
    outputs are all there are skipped; with nothing left to do no engine is made at all."""
    (tmp_path / "other").mkdir()
    (tmp_path / "other/a.jpg").write_bytes(b"pixels")
    items = files(tmp_path / "in", "a.jpg", "done.jpg")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/done.jpg.txt").write_text("an earlier run's\n")
    items += [InputItem(tmp_path / "other/a.jpg", "a.jpg"),  # another file, the same outputs
              InputItem(tmp_path / "in/missing.jpg", "missing.jpg"),
              InputItem(tmp_path / "in/./a.jpg", "a.jpg")]  # the same file again
    runner = Runner(OutputLayout(tmp_path / "out", (txt_format,)))
    events, engine = run(runner, items)
    assert engine.seen == ["a.jpg"]
    kinds = [(type(e).__name__, getattr(e, "reason", None)) for e in events]
    assert kinds == [("Done", None), ("Skipped", "done"), ("Failed", None), ("Failed", None),
                     ("Skipped", "repeated"), ("RunOutputStarted", None), ("RunOutput", None)]
    assert str(events[2].error) == (f"{tmp_path}/other/a.jpg: its outputs (a.jpg) would overwrite "
                                    f"those of {tmp_path / 'in/a.jpg'}")
    assert str(events[3].error) == f"{tmp_path}/in/missing.jpg: no such file"
    assert events[1].outputs == [str(tmp_path / "out/done.jpg.txt")]
    assert (tmp_path / "out/done.jpg.txt").read_text() == "an earlier run's\n"
    # each image once in the end-of-run output, the skipped one too
    assert (tmp_path / "out/index.txt").read_text() == "a.jpg\ndone.jpg\n"

    again = Runner(OutputLayout(tmp_path / "out", (txt_format,)))
    events, engine = run(again, items[:2])
    assert engine is None and [e.reason for e in events[:2]] == ["done", "done"]
    redo = Runner(OutputLayout(tmp_path / "out", (txt_format,)), overwrite=True)
    events, engine = run(redo, items[:2])
    assert engine.seen == ["a.jpg", "done.jpg"] and (tmp_path / "out/done.jpg.txt").read_text() == "done.jpg 6x4 3\n"


def test_an_output_that_cannot_be_written_fails_that_image_only(tmp_path, txt_format):
    items = files(tmp_path / "in", "a.jpg", "b/x.jpg", "c.jpg")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/b").write_text("a file where a folder should be")
    runner = Runner(OutputLayout(tmp_path / "out", (txt_format,)))
    events, _ = run(runner, items)
    assert [type(e).__name__ for e in events] == ["Done", "Failed", "Done", "RunOutputStarted", "RunOutput"]
    assert "b/x.jpg.txt: cannot write" in str(events[1].error)
    assert runner.counts.failures == [str(events[1].error)]


def test_ctrl_c_keeps_finished_outputs_and_leaves_nothing_half_written(tmp_path, txt_format):
    items = files(tmp_path / "in", "a.jpg", "b.jpg", "stop.jpg", "d.jpg")
    runner = Runner(OutputLayout(tmp_path / "out", (txt_format,)))
    engine = FakeEngine()
    got = []
    with pytest.raises(KeyboardInterrupt):
        runner.run(items, lambda: engine, got.append)
    assert [e.item.rel for e in got] == ["a.jpg", "b.jpg"]  # each as its outputs were written
    assert engine.closed and engine.seen == ["a.jpg", "b.jpg", "stop.jpg"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg.txt", "b.jpg.txt"]
    assert not (tmp_path / "out/index.txt").exists()  # the run did not end
    # the rerun skips what is there and does the rest
    events, engine = run(Runner(OutputLayout(tmp_path / "out", (txt_format,))), items[:2] + items[3:])
    assert [type(e).__name__ for e in events] == ["Skipped", "Skipped", "Done", "RunOutputStarted", "RunOutput"]
    assert engine.seen == ["d.jpg"]


def test_a_format_added_through_the_registry_works_in_sam_auto(tmp_path, txt_format, tiny_ckpt, capsys):
    """`sam auto -f txt`, with the format above: --format takes it, the per-image files and the
    end-of-run step are written, and a rerun skips by its outputs."""
    import shutil

    from sam_cli.cli import app

    from conftest import EXAMPLES

    shutil.copy(EXAMPLES / "chelsea.jpg", tmp_path / "chelsea.jpg")  # outside the working folder
    args = ["auto", str(tmp_path / "chelsea.jpg"), "-o", str(tmp_path / "out"), "-f", "txt",
            "-c", str(tiny_ckpt), "--device", "cpu", "--points-per-side", "2", "-q"]
    for status in ("ok", "skipped"):
        with pytest.raises(SystemExit) as e:
            app.main(args)
        assert e.value.code == 0
        line = json.loads(capsys.readouterr().out)
        assert line["status"] == status and line["outputs"] == [str(tmp_path / "out/chelsea.jpg.txt")]
    assert (tmp_path / "out/chelsea.jpg.txt").read_text().startswith("chelsea.jpg 451x300 ")
    assert (tmp_path / "out/index.txt").read_text() == "chelsea.jpg\n"


def test_an_unknown_format_is_a_usage_error(tmp_path):
    from cli_helpers import run_sam

    p = run_sam("auto", tmp_path, "-o", tmp_path / "out", "-f", "gif")
    assert p.returncode == 2
    assert "'gif': choose from png, coco-rle, coco, yolo-seg, cvat, labelstudio, label-map, overlay" in p.stderr.decode()


def test_each_event_comes_as_soon_as_its_image_is_written(tmp_path, txt_format):
    """An image's event is emitted once its outputs are written, while the engine is still
    working on the next image, not when the next result arrives."""
    import threading

    items = files(tmp_path / "in", "a.jpg", "b.jpg")
    seen_while_working: list[list[str]] = []
    events: list = []
    second_started = threading.Event()

    class SlowEngine(FakeEngine):
        def __call__(self, jobs):
            for res in super().__call__(jobs):
                yield res
                if res.item.rel == "a.jpg":  # working on b.jpg now: a.jpg's event must come
                    second_started.set()
                    for _ in range(200):
                        if events:
                            break
                        threading.Event().wait(0.01)
                    seen_while_working.append([e.item.rel for e in events])

    Runner(OutputLayout(tmp_path / "out", (txt_format,))).run(items, SlowEngine, events.append)
    assert second_started.is_set() and seen_while_working == [["a.jpg"]]
