"""`sam auto`'s per-image outputs from mask records: each format against the plain way of
making it (every mask decoded to the whole image), on masks of many sizes, some at the
image's edges, one empty, overlapping one another."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from sam_cli import masks as M
from sam_cli.errors import OutputError
from sam_cli.io import writers
from sam_cli.io.formats.label_map import label_map
from sam_cli.io.formats.png import METADATA_HEADER
from sam_cli.io.outputs import OutputLayout
from sam_cli.masks import MaskRecord

H, W = 90, 130


def some_masks() -> np.ndarray:
    g = np.random.default_rng(1)
    ms = np.zeros((12, H, W), np.uint8)
    for i in range(9):
        r = int(g.integers(3, 40))
        centre = (int(g.integers(0, W)), int(g.integers(0, H)))
        cv2.ellipse(ms[i], centre, (r, r // 2 + 1), float(g.integers(0, 180)), 0, 360, 1, -1)
    ms[9, :, :] = 1  # the whole image
    ms[10, 0, W - 1] = ms[10, H - 1, 0] = 1  # two corner pixels: a box as big as the image
    # ms[11] stays empty
    return ms.astype(bool)


@pytest.fixture
def records():
    masks = some_masks()
    rles = M.masks_to_rle(torch.from_numpy(masks))
    recs = [MaskRecord(r, [0, 0, 0, 0], 0.9, [1.0, 2.0], 0.95, [0, 0, W, H]) for r in rles]
    return masks, recs


def test_png_folder_holds_every_whole_mask(tmp_path, records):
    masks, recs = records
    layout = OutputLayout(tmp_path, ("png",))
    layout.write("x.jpg", np.zeros((H, W, 3), np.uint8), recs)
    folder = tmp_path / "x.jpg.masks"
    for i, m in enumerate(masks):
        png = cv2.imread(str(folder / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and np.array_equal(png, m.astype(np.uint8) * 255), i
    assert len((folder / "metadata.csv").read_text().splitlines()) == len(masks) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jpg.masks"]  # nothing left over


def test_png_folder_that_cannot_be_written_is_one_error_and_leaves_nothing(tmp_path, records):
    _, recs = records
    (tmp_path / "a").write_text("a file where the output wants a folder")
    with pytest.raises(OutputError, match="a/x.jpg.masks: cannot write"):
        OutputLayout(tmp_path, ("png",)).write("a/x.jpg", np.zeros((H, W, 3), np.uint8), recs)
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_png_folder_stops_at_a_failing_mask(tmp_path, records, monkeypatch):
    """A mask that fails to write fails the image's png output, with the file named, and no
    temporary folder is left behind (the masks are written on several threads)."""
    _, recs = records
    real = writers.crop_png

    def flaky(crop, hw):
        if crop.mask.size and crop.mask.all() and crop.mask.shape == (H, W):
            raise OSError(28, "No space left on device")
        return real(crop, hw)

    monkeypatch.setattr(writers, "crop_png", flaky)
    with pytest.raises(OutputError, match=r"x.jpg.masks: cannot write \(No space left on device\)"):
        OutputLayout(tmp_path, ("png",)).write("x.jpg", np.zeros((H, W, 3), np.uint8), recs)
    assert list(tmp_path.iterdir()) == []


def test_label_map_is_the_smallest_covering_mask(records):
    masks, recs = records
    plain = np.zeros((H, W), np.uint16)
    for i in sorted(range(len(masks)), key=lambda i: -int(masks[i].sum())):
        plain[masks[i]] = i + 1
    assert np.array_equal(label_map(recs, (H, W)), plain)


def test_an_image_without_masks_gets_every_output(tmp_path):
    """A photo where nothing passes the filters (a random model's, often): an empty folder of
    PNGs with the CSV header, an all-zero label map, the photo itself as its overlay."""
    image = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    layout = OutputLayout(tmp_path, ("png", "coco-rle", "label-map", "overlay"))
    layout.write("x.jpg", image, [])
    assert (tmp_path / "x.jpg.masks/metadata.csv").read_text() == METADATA_HEADER + "\n"
    assert not (cv2.imread(str(tmp_path / "x.jpg.labels.png"), cv2.IMREAD_UNCHANGED)).any()
    assert json.loads((tmp_path / "x.jpg.json").read_text())["annotations"] == []
    assert np.array_equal(writers.overlay_crops(image, []), image)
    assert cv2.imread(str(tmp_path / "x.jpg.overlay.jpg")).shape == (H, W, 3)


def test_overlay_colours_each_mask_and_outlines_it(records):
    """Against the plain way: each mask's pixels alone under it are blended half and half
    with its colour (rounded), its outline is what OpenCV draws for the whole mask, and every
    other pixel is the image's."""
    masks, recs = records
    image = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    keep = [0, 1, 2, 11]  # three ellipses and the empty mask
    out = writers.overlay_crops(image, [M.rle_to_crop(recs[i].rle) for i in keep])
    assert np.array_equal(writers.overlay(image, [masks[i] for i in keep]), out)
    colours = writers.palette(len(keep))
    outlines = []
    for i in keep:
        canvas = np.zeros((H, W), np.uint8)
        contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outlines.append(cv2.drawContours(canvas, contours, -1, 1, 1).astype(bool))
    covered = np.any([masks[i] for i in keep], axis=0)
    any_outline = np.any(outlines, axis=0)
    assert np.array_equal(out[~covered & ~any_outline], image[~covered & ~any_outline])
    for j, i in enumerate(keep[:3]):
        others = np.any([masks[k] | outlines[n] for n, k in enumerate(keep) if k != i], axis=0)
        alone = masks[i] & ~others & ~outlines[j]
        assert alone.any()
        want = image[alone] * 0.5 + colours[j].astype(np.float64) * 0.5
        assert np.abs(out[alone] - want).max() <= 0.5 + 1e-9  # rounded to nearest
        line = outlines[j] & ~others
        assert line.any() and (out[line] == colours[j]).all()


def test_coco_dataset_is_streamed_from_the_per_image_files(tmp_path, records):
    """coco.json: every image's annotations, numbered across the run in output-key order (the
    order a merge of shards has), with the images and the category, as one JSON document
    pycocotools reads; a per-image file that cannot be read
    back is an error naming it, and leaves no coco.json or temporary file."""
    from pycocotools.coco import COCO

    _, recs = records
    layout = OutputLayout(tmp_path, ("coco",))
    for rel, n in (("a/x.jpg", 5), ("y.png", 0), ("b/z.jpg", 12)):
        layout.write(rel, np.zeros((H, W, 3), np.uint8), recs[:n])
    path = layout.finish(["a/x.jpg", "y.png", "b/z.jpg"])[0][0]
    doc = json.loads(path.read_text())
    assert set(doc) == {"info", "annotations", "images", "categories"}
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in doc["images"]] == [
        (1, "a/x.jpg", W, H), (2, "b/z.jpg", W, H), (3, "y.png", W, H)]
    anns = doc["annotations"]
    assert [a["id"] for a in anns] == list(range(1, 18))
    assert [a["image_id"] for a in anns] == [1] * 5 + [2] * 12
    per_image = json.loads((tmp_path / "b/z.jpg.json").read_text())["annotations"]
    assert [a["segmentation"] for a in anns[5:]] == [a["segmentation"] for a in per_image]
    coco = COCO(str(path))
    assert len(coco.getAnnIds(imgIds=[2])) == 12
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    assert coco.annToMask(ann).sum() == ann["area"]

    (tmp_path / "y.png.json").write_text("{not json")
    path.unlink()
    with pytest.raises(OutputError, match=r"y.png.json: cannot read it back for coco.json"):
        layout.finish(["a/x.jpg", "y.png", "b/z.jpg"])[0]
    assert not path.exists() and not list(tmp_path.glob(".coco.json*"))
