"""`sam segment IMAGES --text PHRASE` (SAM 3): the command's masks, scores and categories are the
detector's (sam3_tiny.PartByPart, checked against Meta's processor in test_sam3_parts.py) on a tiny
SAM 3 checkpoint in sam3.pt's layout; every format, resume, the embedding cache, bad phrases,
the download of the gated file from a hub on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_sam
from conftest import EXAMPLES
from sam3_tiny import PartByPart, save_tiny_sam3

PHOTOS = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")


@pytest.fixture(scope="module")
def sam3_ckpt(tmp_path_factory) -> Path:
    return save_tiny_sam3(tmp_path_factory.mktemp("sam3") / "sam3.pt", seed=3)


@pytest.fixture()
def photos(tmp_path) -> Path:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    for i, name in enumerate(PHOTOS):
        shutil.copy(EXAMPLES / name, (d / "sub" if i == 2 else d) / name)
    return d


def _predictor(ckpt: Path):
    from sam_cli.checkpoints import load

    loaded = load(checkpoint=ckpt)
    assert loaded.family == "sam3" and loaded.ignored == ("tracker.maskmem_tpos_enc",)
    return PartByPart(loaded.net.detector)


def _middle_score(ckpt: Path, phrases: list[str]) -> float:
    """A threshold between two of the detector's middle scores on the first photo: some
    detections kept, some not (on that photo; the others' scores fall where they fall)."""
    from sam_cli.io.images import read_image

    found = _predictor(ckpt).predict(torch.from_numpy(read_image(EXAMPLES / PHOTOS[0])), phrases, threshold=0.0)
    return _gap(torch.cat([f.scores for f in found]))


def _gap(scores: torch.Tensor) -> float:
    """The middle of the widest gap between the middle half of the scores: a threshold that
    float rounding cannot put on either side of a score."""
    s = scores.sort().values
    gaps = s[1:] - s[:-1]
    k = int(gaps[len(s) // 4 : 3 * len(s) // 4].argmax()) + len(s) // 4
    return float(s[k] + s[k + 1]) / 2


def test_text_prompts_find_what_the_detector_finds_over_a_folder(sam3_ckpt, photos, tmp_path):
    """Two phrases over a folder (one image in a subfolder): each image's records are, phrase by
    phrase, the detections the detector keeps above --min-score: the same scores, the same
    masks; each mask's category the phrase that found it; coco.json's categories the phrases."""
    from pycocotools import mask as coco_mask

    from sam_cli.io.images import read_image

    phrases = ["dog", "a cup of coffee"]
    threshold = _middle_score(sam3_ckpt, phrases)
    out = tmp_path / "out"
    r = run_sam("segment", photos, "--text", phrases[0], "-t", phrases[1], "-o", out, "-c", sam3_ckpt,
                "--min-score", f"{threshold!r}", "-f", "coco-rle", "-f", "coco")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert sorted(Path(x["input"]).name for x in lines) == sorted(PHOTOS)
    predictor = _predictor(sam3_ckpt)
    kept = total = 0
    for rel in ("chelsea.jpg", "coffee.jpg", "sub/astronaut.jpg"):
        rgb = read_image(photos / rel)
        want = predictor.predict(torch.from_numpy(rgb), phrases, threshold=threshold)
        got = json.loads((out / f"{rel}.json").read_text())["annotations"]
        for row, (phrase, found) in enumerate(zip(phrases, want)):
            mine = [a for a in got if a["category"] == phrase]
            assert all(a["category_id"] == row + 1 and a["object_index"] == row for a in mine)
            assert [a["score"] for a in mine] == pytest.approx(found.scores.tolist(), abs=2e-6)
            for a, m in zip(mine, found.masks):
                assert np.array_equal(coco_mask.decode(a["segmentation"]).astype(bool), m.numpy())
            kept += len(mine)
        total += 2 * 12
    assert 0 < kept < total  # the threshold kept some detections and left others
    coco = json.loads((out / "coco.json").read_text())
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "dog"), (2, "a cup of coffee")]
    assert len(coco["annotations"]) == kept
    assert {a["score"] for a in coco["annotations"]} <= {a["score"] for x in ("chelsea.jpg", "coffee.jpg",
                                                                            "sub/astronaut.jpg")
                                                         for a in json.loads((out / f"{x}.json").read_text())["annotations"]}
    record = json.loads((out / "sam-run.json").read_text())
    assert record["mode"] == "text" and record["settings"]["text"] == phrases


def test_every_format_lists_every_phrase_even_one_found_nowhere(sam3_ckpt, photos, tmp_path):
    """--min-score 0.99 keeps nothing: each format is written, every phrase is a category in
    coco.json, CVAT's labels and YOLO's names, in the order given."""
    out = tmp_path / "out"
    r = run_sam("segment", photos, "--text", "dog", "--text", "cat", "-o", out, "-c", sam3_ckpt, "--min-score",
                "0.99", *[x for f in ("coco", "cvat", "labelstudio", "yolo-seg", "png", "overlay", "label-map")
                          for x in ("-f", f)])
    assert r.returncode == 0, r.stderr
    assert all(json.loads(x)["masks"] == 0 for x in r.stdout.decode().splitlines())
    coco = json.loads((out / "coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["dog", "cat"] and coco["annotations"] == []
    assert (out / "dataset.yaml").exists() or list(out.rglob("*.yaml"))
    names = next(out.rglob("*.yaml")).read_text()
    assert names.index("dog") < names.index("cat")
    assert "dog" in next(out.rglob("*.xml")).read_text()


def test_a_rerun_skips_other_phrases_are_refused_and_the_cache_gives_the_same_masks(sam3_ckpt, photos, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "emb"
    args = ["segment", photos, "--text", "dog", "-c", sam3_ckpt, "--min-score", "0.3", "-f", "coco-rle"]
    first = run_sam(*args, "-o", out, "--embedding-cache", cache)
    assert first.returncode == 0, first.stderr
    again = run_sam(*args, "-o", out, "--embedding-cache", cache)
    assert again.returncode == 0 and b"3 skipped" in again.stderr
    other = run_sam(*[a if a != "dog" else "cat" for a in args], "-o", out)
    assert other.returncode != 0 and b"text" in other.stderr
    cached = run_sam(*args, "-o", tmp_path / "out2", "--embedding-cache", cache)
    assert cached.returncode == 0, cached.stderr
    for rel in ("chelsea.jpg.json", "coffee.jpg.json", "sub/astronaut.jpg.json"):
        assert (out / rel).read_bytes() == (tmp_path / "out2" / rel).read_bytes()
    assert len(list(cache.rglob("*.npz"))) == 3 or len([p for p in cache.rglob("*") if p.is_file()]) >= 3


@pytest.mark.parametrize("phrase,says", [
    ("", "the phrase is empty"), ("   ", "the phrase is empty"), ("x" * 10_000, "10000 characters"),
    ("dog\x00", "control character"), ("dog\ncat", "control character"),
])
def test_a_bad_phrase_is_one_line_and_exit_2(sam3_ckpt, photos, tmp_path, phrase, says):
    r = run_sam("segment", photos, "--text", phrase, "-o", tmp_path / "out", "-c", sam3_ckpt)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr.decode() and b"Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_what_does_not_go_with_text_is_refused(sam3_ckpt, photos, tmp_path, tiny_ckpt):
    cases = [
        (["--point", "3,4"], "does not go with --text"),
        (["--prompts", "x.jsonl"], "a prompt file gives its own phrases"),
        (["--refine"], "does not go with --text"),
        (["--exemplar", "1,2,30,40"], "give that one image"),  # a folder
        (["--min-score", "1.5"], "between 0 and 1"),
    ]
    for extra, says in cases:
        r = run_sam("segment", photos, "--text", "dog", *extra, "-o", tmp_path / "o", "-c", sam3_ckpt)
        assert r.returncode == 2 and says in r.stderr.decode(), (extra, r.stderr)
    r = run_sam("segment", photos, "--text", "dog", "-o", tmp_path / "o", "-c", tiny_ckpt)
    assert r.returncode == 2 and b"needs a SAM 3 model" in r.stderr, r.stderr
    one = photos / "chelsea.jpg"
    headless = save_tiny_sam3(tmp_path / "headless.pt", seed=3, head=False)
    r = run_sam("segment", one, "--point", "30,40", "-o", tmp_path / "m.png", "-c", headless)
    assert r.returncode == 2 and b"has no point-and-box head" in r.stderr, r.stderr
    r = run_sam("auto", photos, "-o", tmp_path / "a", "-c", sam3_ckpt)
    assert r.returncode == 2 and b"automatic mode" in r.stderr, r.stderr


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    assert cv2.imwrite(str(path), rgb[..., ::-1])


def _annotations(path: Path) -> list[tuple]:
    """A coco-rle file's masks as (phrase, score, mask, prompt), in order."""
    return [(a["category"], a["score"], a["segmentation"]["counts"], a["prompt"])
            for a in json.loads(path.read_text())["annotations"]]


def test_a_prompt_file_of_phrases_and_exemplars_finds_what_text_finds(sam3_ckpt, photos, tmp_path):
    """Phrases in a prompt file, each image its own (a line's "text", an object's text with
    exemplars, a CSV's text column with a row per exemplar): each image's masks, scores and
    prompts those of `--text` with the same phrases (and --exemplar boxes) on that image; the
    CSV the same as the JSON Lines; categories the phrases, or the object's own category."""
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in [
        {"image": "chelsea.jpg", "text": ["cat", "a sofa"]},
        {"image": "coffee.jpg", "objects": [{"text": "cup", "exemplars": [[30, 40, 200, 180]],
                                             "neg_exemplars": [[250, 10, 390, 90]], "category": "mug", "id": "9"}]},
        {"image": "sub/astronaut.jpg", "text": "person"},
    ]) + "\n")
    csv = tmp_path / "p.csv"
    csv.write_text("image,text,x0,y0,x1,y1,label,category,id\nchelsea.jpg,cat,,,,,,,\nchelsea.jpg,a sofa,,,,,,,\n"
                   "coffee.jpg,cup,30,40,200,180,1,mug,9\ncoffee.jpg,cup,250,10,390,90,0,,\n"
                   "sub/astronaut.jpg,person,,,,,,,\n")
    common = ["-c", sam3_ckpt, "--min-score", "0", "-f", "coco-rle", "-f", "coco", "--images", photos]
    for src, out in ((jsonl, tmp_path / "j"), (csv, tmp_path / "c")):
        r = run_sam("segment", "--prompts", src, "-o", out, *common)
        assert r.returncode == 0, r.stderr
    for rel in ("chelsea.jpg", "coffee.jpg", "sub/astronaut.jpg"):
        assert (tmp_path / "j" / f"{rel}.json").read_bytes() == (tmp_path / "c" / f"{rel}.json").read_bytes()
    wants = {"chelsea.jpg": ["--text", "cat", "--text", "a sofa"], "sub/astronaut.jpg": ["--text", "person"],
             "coffee.jpg": ["--text", "cup", "--exemplar", "30,40,200,180", "--neg-exemplar", "250,10,390,90"]}
    found = 0
    for rel, args in wants.items():
        out = tmp_path / rel.replace("/", "_")
        r = run_sam("segment", photos / rel, *args, "-o", out, "-c", sam3_ckpt, "--min-score", "0", "-f", "coco-rle")
        assert r.returncode == 0, r.stderr
        want = _annotations(out / f"{Path(rel).name}.json")
        got = _annotations(tmp_path / "j" / f"{rel}.json")
        if rel == "coffee.jpg":  # the object's own category and id
            raw = json.loads((tmp_path / "j" / f"{rel}.json").read_text())["annotations"]
            assert {(a["category"], a["object_id"]) for a in raw} <= {("mug", "9")}
            want = [("mug", *w[1:]) for w in want]
        assert got == want
        found += len(got)
    assert found > 0
    coco = json.loads((tmp_path / "j" / "coco.json").read_text())
    assert {c["name"] for c in coco["categories"]} <= {"cat", "a sofa", "mug", "person"}


def test_a_prompt_file_s_concepts_and_boxes_each_need_their_model(sam3_ckpt, tiny_ckpt, photos, tmp_path):
    """A box object with SAM 3, a text object with SAM 1, and a bad concept each fail their own
    image, named with the line (exit 5, the others done); mask choices and --text with a prompt
    file are usage errors."""
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in [
        {"image": "chelsea.jpg", "text": "cat"},
        {"image": "coffee.jpg", "objects": [{"box": [1, 2, 30, 40]}]},
        {"image": "sub/astronaut.jpg", "objects": [{"text": "x", "box": [1, 2, 3, 4]}]},
    ]) + "\n")
    r = run_sam("segment", "--prompts", p, "--images", photos, "-o", tmp_path / "a", "-c", sam3_ckpt)
    err = r.stderr.decode()
    assert r.returncode == 5 and "1 done" in err and "2 failed" in err, err
    assert "p.jsonl line 2, object 0: a box, point or mask object in a file read as SAM 3's phrases" in err
    assert "p.jsonl line 3, object 0: a text or exemplar object takes no box" in err
    r = run_sam("segment", "--prompts", p, "--images", photos, "-o", tmp_path / "b", "-c", tiny_ckpt)
    err = r.stderr.decode()
    assert r.returncode == 5 and "1 done" in err, err
    assert "p.jsonl line 1, text 0: a text or exemplar prompt needs a SAM 3 model (--model sam3)" in err
    for extra, says in ((["--multimask"], "SAM 3 gives one mask per instance"),
                        (["--text", "dog"], "a prompt file gives its own phrases")):
        r = run_sam("segment", "--prompts", p, "--images", photos, "-o", tmp_path / "c", "-c", sam3_ckpt, *extra)
        assert r.returncode == 2 and says in r.stderr.decode(), (extra, r.stderr)


def test_points_and_boxes_on_sam3_go_through_its_point_and_box_head(sam3_ckpt, photos, tmp_path):
    """`sam segment IMAGE --point` and a prompt file of boxes and clicks with SAM 3: the masks
    sam's predictor gives through the head (itself checked against Meta's predict_inst in
    test_sam3_parts.py), with the cache's features the same as without."""
    from pycocotools import mask as coco_mask

    from sam_cli.checkpoints import load
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    photo = photos / "chelsea.jpg"
    pred = Predictor(load(checkpoint=sam3_ckpt).net)
    pred.set_image(read_image(photo))
    want_point = pred.predict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]), multimask=False)
    want_box = pred.predict(boxes=np.array([[50.0, 50, 300, 250]]), multimask=False)
    r = run_sam("segment", photo, "--point", "200,150", "-c", sam3_ckpt, "-o", tmp_path / "m.json",
                "--embedding-cache", tmp_path / "emb")
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "m.json").read_text())
    assert len(got) == 1 and np.array_equal(coco_mask.decode(got[0]["segmentation"]).astype(bool),
                                            want_point.masks[0, 0])
    p = tmp_path / "b.jsonl"
    p.write_text(json.dumps({"image": "chelsea.jpg", "objects": [{"box": [50, 50, 300, 250]},
                                                                 {"points": [[200, 150]]}]}) + "\n")
    for cache in ([], ["--embedding-cache", tmp_path / "emb"]):
        out = tmp_path / f"o{len(cache)}"
        r = run_sam("segment", "--prompts", p, "--images", photos, "-c", sam3_ckpt, "-o", out, "-f", "coco-rle", *cache)
        assert r.returncode == 0, r.stderr
        anns = json.loads((out / "chelsea.jpg.json").read_text())["annotations"]
        assert [a["object_index"] for a in anns] == [0, 1]
        for a, want in zip(anns, (want_box, want_point)):
            assert np.array_equal(coco_mask.decode(a["segmentation"]).astype(bool), want.masks[0, 0])
            assert a["predicted_iou"] == pytest.approx(float(want.iou[0, 0]), abs=1e-6)
    # a mask image, squashed as the photo is, to the head's low-res side (4× the token grid)
    from sam_cli.prompts import load_mask_prompt

    rgb = read_image(photo)
    mask = np.zeros(rgb.shape, np.uint8)
    mask[50:250, 100:300] = 255
    _write_png(tmp_path / "mask.png", mask)
    logits = load_mask_prompt(tmp_path / "mask.png", rgb.shape[:2], pred.model)
    assert logits.shape == (1, *pred.model.low_res_hw)
    want = pred.predict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]), mask_input=logits,
                        multimask=False)
    r = run_sam("segment", photo, "--point", "200,150", "--mask-input", tmp_path / "mask.png", "-c", sam3_ckpt,
                "-o", tmp_path / "mm.json")
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "mm.json").read_text())
    assert np.array_equal(coco_mask.decode(got[0]["segmentation"]).astype(bool), want.masks[0, 0])


def test_exemplar_boxes_on_one_image_are_the_detector_s_geometry_prompt(sam3_ckpt, tmp_path):
    """--exemplar and --neg-exemplar: the boxes go with the phrase to the detector as Meta's
    processor sends them (cx, cy, w, h of the image, label 1 or 0): the same logits, bit for bit,
    as the detector given those boxes, and not those of the boxes as corners or of the labels
    swapped; the records say which boxes were given."""
    from sam_cli.checkpoints import load
    from sam_cli.io.images import read_image
    from sam_cli.models.sam3.model import preprocess
    from sam_cli.models.sam3.tokenizer import Tokenizer
    from sam_cli.text_prompts import TextSegmenter, TextSettings

    one = EXAMPLES / "chelsea.jpg"
    rgb = read_image(one)
    h, w = rgb.shape[:2]
    net = load(checkpoint=sam3_ckpt).net
    seg = TextSegmenter(net, TextSettings(("cat",), 0.0, ((40, 30, 200, 250), (250, 10, 400, 100)), (1, 0)))
    with torch.no_grad():
        got = seg.detect(rgb, net.encode(net.prepare(torch.from_numpy(rgb)))["trunk"])
        pad, text = net.detector.encode_text(Tokenizer()(["cat"]))
        levels = net.detector.encode_image(preprocess(torch.from_numpy(rgb), 112))

        def detect(boxes, labels):
            return net.detector.detect(levels, pad, text, boxes=torch.tensor([boxes]), box_labels=torch.tensor([labels]))

        want = detect([[120 / w, 140 / h, 160 / w, 220 / h], [325 / w, 55 / h, 150 / w, 90 / h]], [1.0, 0.0])
        corners = detect([[40 / w, 30 / h, 200 / w, 250 / h], [250 / w, 10 / h, 400 / w, 100 / h]], [1.0, 0.0])
        swapped = detect([[120 / w, 140 / h, 160 / w, 220 / h], [325 / w, 55 / h, 150 / w, 90 / h]], [0.0, 1.0])
    assert torch.equal(got.logits, want.logits) and torch.equal(got.masks, want.masks)
    assert not torch.equal(got.logits, corners.logits) and not torch.equal(got.logits, swapped.logits)
    out = tmp_path / "out"
    r = run_sam("segment", one, "--text", "cat", "--exemplar", "40,30,200,250", "--neg-exemplar", "250,10,400,100",
                "-o", out, "-c", sam3_ckpt, "--min-score", "0", "-f", "coco-rle")
    assert r.returncode == 0, r.stderr
    recs = json.loads(Path(json.loads(r.stdout)["outputs"][0]).read_text())["annotations"]
    assert [a["score"] for a in recs] == pytest.approx(want.scores[0].tolist(), abs=2e-6)
    assert recs[0]["prompt"] == {"text": "cat", "exemplars": [[40.0, 30.0, 200.0, 250.0], [250.0, 10.0, 400.0, 100.0]],
                                 "exemplar_labels": [1, 0]}


# ------------------------------------------------------------------ the gated download
class _Hub:
    """A stand-in for the Hugging Face hub on 127.0.0.1: /facebook/sam3/resolve/main/sam3.pt
    answers 401 without a token, 403 for a token without access, else a 302 to /cdn/… carrying
    the file's sha256 (X-Linked-Etag) and size, as the hub's redirects to its storage do."""

    def __init__(self, data: bytes, sha: str) -> None:
        self.data, self.sha, self.seen = data, sha, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                auth = self.headers.get("Authorization")
                hub.seen.append((self.path, auth))
                if self.path == "/facebook/sam3/resolve/main/sam3.pt":
                    if auth is None:
                        return self.send_error(401, "Unauthorized")
                    if auth != "Bearer good":
                        return self.send_error(403 if auth == "Bearer nope" else 401, "Refused")
                    self.send_response(302)
                    self.send_header("Location", "/cdn/sam3.pt?signed=1")
                    self.send_header("X-Linked-Etag", f'"{hub.sha}"')
                    self.send_header("X-Linked-Size", str(len(hub.data)))
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                if self.path.startswith("/cdn/sam3.pt"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(hub.data)))
                    self.end_headers()
                    return self.wfile.write(hub.data)
                self.send_error(404, "Not Found")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def hub(sam3_ckpt, monkeypatch):
    import hashlib

    data = sam3_ckpt.read_bytes()
    h = _Hub(data, hashlib.sha256(data).hexdigest())
    monkeypatch.delenv("SAM_BASE_URL")
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "SAM_SHA256_SAM3"):
        monkeypatch.delenv(var, raising=False)
    yield h
    h.close()


def test_the_gated_checkpoint_needs_a_token_and_says_so(hub, monkeypatch):
    r = run_sam("models", "download", "sam3")
    err = r.stderr.decode()
    assert r.returncode == 6 and "HF_TOKEN is not set" in err and "accept the licence" in err, err
    assert "Traceback" not in err and len([x for x in err.splitlines() if x.strip()]) <= 2
    monkeypatch.setenv("HF_TOKEN", "wrong")
    r = run_sam("models", "download", "sam3")
    assert r.returncode == 6 and b"refused the token in HF_TOKEN" in r.stderr, r.stderr
    monkeypatch.setenv("HF_TOKEN", "nope")
    r = run_sam("models", "download", "sam3")
    assert r.returncode == 6 and b"no access to facebook/sam3" in r.stderr, r.stderr


def test_a_hub_out_of_reach_says_the_token_is_needed_too_when_none_is_set(hub, monkeypatch):
    """No network (here: nothing listening at the hub's address): one line, exit 6, and, with
    HF_TOKEN unset, that the gated file needs it too, so the user learns it before going online."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    r = run_sam("models", "download", "sam3")
    err = r.stderr.decode()
    assert r.returncode == 6 and "no network?" in err and "also need HF_TOKEN" in err, err
    assert "Traceback" not in err and len([x for x in err.splitlines() if x.strip()]) <= 2
    monkeypatch.setenv("HF_TOKEN", "set")
    r = run_sam("models", "download", "sam3")
    assert r.returncode == 6 and b"no network?" in r.stderr and b"HF_TOKEN" not in r.stderr, r.stderr


def test_a_prompt_file_of_phrases_takes_sam3_unless_told(hub, photos, tmp_path):
    """No --model, and the file's first image has phrases: SAM 3 (here, its gated download
    without a token says so)."""
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"image": "chelsea.jpg", "text": "cat"}) + "\n")
    r = run_sam("segment", "--prompts", p, "--images", photos, "-o", tmp_path / "o")
    assert r.returncode == 6 and b"sam3's weights are gated" in r.stderr, r.stderr


def test_the_gated_checkpoint_downloads_checked_against_the_hub_s_sha256(hub, monkeypatch, photos, tmp_path):
    """With a token: the file is fetched through the hub's redirect, the token sent to the hub
    only, checked against the hub's sha256, recorded as verified; `--text` runs then use it with
    no --checkpoint. A file the hub's hash does not match is refused and not kept."""
    from sam_cli.fetch import cache_dir, cache_status
    from sam_cli.registry import MODELS

    monkeypatch.setenv("HF_TOKEN", "good")
    r = run_sam("models", "download", "sam3")
    assert r.returncode == 0, r.stderr
    assert (cache_dir() / "sam3.pt").read_bytes() == hub.data
    assert cache_status(MODELS["sam3"])["verified"]
    assert [a for p, a in hub.seen if p.startswith("/cdn/")] == [None]  # no token to the storage
    r = run_sam("segment", photos, "--text", "dog", "-o", tmp_path / "out", "--min-score", "0.3")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "sam-run.json").read_text())["weights"] == "sam3 (facebook/sam3 sam3.pt)"
    r = run_sam("models", "verify", "sam3")
    assert r.returncode == 0 and b"ok" in r.stdout
    r = run_sam("models", "download", "sam3")  # verified in the cache: not fetched again
    assert r.returncode == 0 and len([p for p, _ in hub.seen if p.startswith("/cdn/")]) == 1
    (cache_dir() / "sam3.pt").unlink()
    hub.sha = "0" * 64  # the hub says another file than the one it serves
    r = run_sam("models", "download", "sam3")
    assert r.returncode == 6 and b"does not match" in r.stderr, r.stderr
    assert not (cache_dir() / "sam3.pt.part").exists()


def test_a_mirror_of_sam3_needs_the_file_s_sha256_named(sam3_ckpt, monkeypatch):
    import hashlib

    from httpserver import FileServer

    data = sam3_ckpt.read_bytes()
    with FileServer({"sam3.pt": data}) as srv:
        monkeypatch.setenv("SAM_BASE_URL", srv.url)
        monkeypatch.delenv("SAM_SHA256_SAM3", raising=False)
        r = run_sam("models", "download", "sam3")
        assert r.returncode == 6 and b"SAM_SHA256_SAM3" in r.stderr, r.stderr
        monkeypatch.setenv("SAM_SHA256_SAM3", hashlib.sha256(data).hexdigest())
        r = run_sam("models", "download", "sam3")
        assert r.returncode == 0, r.stderr


def test_many_phrases_go_through_the_detector_a_few_at_a_time_with_the_same_detections(sam3_ckpt, monkeypatch):
    """Phrases in chunks (PHRASES_AT_ONCE) find what all of them at once find: the rows are
    independent, and each keeps its category id."""
    from sam_cli import text_prompts
    from sam_cli.checkpoints import load
    from sam_cli.io.images import read_image
    from sam_cli.text_prompts import TextSegmenter, TextSettings

    monkeypatch.setattr(text_prompts, "PHRASES_AT_ONCE", 2)
    phrases = ("dog", "cat", "a red car", "person", "cup")
    rgb = read_image(EXAMPLES / "coffee.jpg")
    net = load(checkpoint=sam3_ckpt).net
    predictor = _predictor(sam3_ckpt)
    every = torch.cat([f.scores for f in predictor.predict(torch.from_numpy(rgb), list(phrases), threshold=0.0)])
    threshold = _gap(every)
    seg = TextSegmenter(net, TextSettings(phrases, threshold))
    with torch.no_grad():
        got = seg.segment(rgb, net.encode(net.prepare(torch.from_numpy(rgb)))["trunk"])
    want = predictor.predict(torch.from_numpy(rgb), list(phrases), threshold=threshold)
    for row, found in enumerate(want):
        mine = [r for r in got if r.object_index == row]
        assert all(r.source["category"] == phrases[row] and r.source["category_id"] == row + 1 for r in mine)
        assert [r.source["score"] for r in mine] == pytest.approx(found.scores.tolist(), abs=2e-6)
    assert 0 < len(got) < 5 * 12


def test_eval_text_scores_the_detections_of_the_category_names_with_pycocotools(sam3_ckpt, tiny_ckpt, tmp_path):
    """`sam eval GT --text`: each category's name is a phrase on every image; the report's mask AP
    is pycocotools' on the detector's own detections (above 0.05, the 100 best per image, each
    under its phrase's category id), the ground truth here being some of those detections
    (so AP is well above 0) and a disc no detection matches."""
    import cv2
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from sam_cli.io.images import read_image

    predictor = _predictor(sam3_ckpt)
    cats = {7: "dog", 3: "a cup of coffee"}
    images, anns, res = [], [], []
    for image_id, name in ((11, "chelsea.jpg"), (12, "coffee.jpg")):
        rgb = read_image(EXAMPLES / name)
        h, w = rgb.shape[:2]
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        found = dict(zip(sorted(cats), predictor.predict(torch.from_numpy(rgb), [cats[c] for c in sorted(cats)],
                                                         threshold=0.05)))
        dets = sorted(((float(s), c, m) for c, f in found.items() for s, m in zip(f.scores, f.masks)),
                      key=lambda d: -d[0])[:100]
        for s, c, m in dets:
            rle = coco_mask.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            res.append({"image_id": image_id, "category_id": c, "segmentation": rle, "score": round(s, 6)})
        for _, c, m in dets[:2]:  # two detections are the truth
            rle = coco_mask.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": c, "segmentation": rle,
                         "area": float(m.sum()), "bbox": [float(v) for v in coco_mask.toBbox(rle)], "iscrowd": 0})
        disc = np.zeros((h, w), np.uint8)
        cv2.circle(disc, (w // 3, h // 3), 20, 1, -1)
        rle = coco_mask.encode(np.asfortranarray(disc))
        rle["counts"] = rle["counts"].decode()
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 3, "segmentation": rle,
                     "area": float(disc.sum()), "bbox": [float(v) for v in coco_mask.toBbox(rle)], "iscrowd": 0})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": i, "name": n} for i, n in cats.items()]}))
    coco = COCO(str(gt))
    e = COCOeval(coco, coco.loadRes(res), "segm")
    e.evaluate()
    e.accumulate()
    e.summarize()
    r = run_sam("eval", gt, "--images", EXAMPLES, "-o", tmp_path / "report", "-c", sam3_ckpt, "--text")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report" / "eval.json").read_text())
    assert report["summary"]["ap"]["AP"] == pytest.approx(e.stats[0], abs=1e-6) and 0.3 < e.stats[0] < 1
    assert report["summary"]["ap"]["AP50"] == pytest.approx(e.stats[1], abs=1e-6)
    assert report["summary"]["detections"] == len(res) and report["summary"]["images"] == 2
    assert b"mask AP" in r.stderr
    refused = run_sam("eval", gt, "--images", EXAMPLES, "-o", tmp_path / "r2", "-c", sam3_ckpt, "--text", "--box")
    assert refused.returncode == 2 and b"two evaluations" in refused.stderr
    refused = run_sam("eval", gt, "--images", EXAMPLES, "-o", tmp_path / "r3", "-c", tiny_ckpt, "--text")
    assert refused.returncode == 2 and b"needs a SAM 3 model" in refused.stderr, refused.stderr


@pytest.mark.heavy
def test_text_prompts_spread_over_shards_and_worker_processes(sam3_ckpt, photos, tmp_path):
    """--shard I/N then sam merge gives the plain run's files byte for byte; --devices cpu,cpu
    (two worker processes, threads of their own) the same detections and scores."""
    args = ["segment", photos, "--text", "dog", "--text", "cat", "-c", sam3_ckpt, "--min-score", "0.3",
            "-f", "coco-rle", "-f", "coco"]
    assert run_sam(*args, "-o", tmp_path / "plain").returncode == 0
    for i in range(2):
        r = run_sam(*args, "-o", tmp_path / "sharded", "--shard", f"{i}/2")
        assert r.returncode == 0, r.stderr
    r = run_sam("merge", tmp_path / "sharded")
    assert r.returncode == 0, r.stderr
    plain = json.loads((tmp_path / "plain" / "coco.json").read_text())
    assert json.loads((tmp_path / "sharded" / "coco.json").read_text()) == plain
    r = run_sam(*args, "-o", tmp_path / "workers", "--devices", "cpu,cpu")
    assert r.returncode == 0, r.stderr
    spread = json.loads((tmp_path / "workers" / "coco.json").read_text())
    assert spread["categories"] == plain["categories"] == [{"id": 1, "name": "dog", "supercategory": "object"},
                                                           {"id": 2, "name": "cat", "supercategory": "object"}]
    key = [(a["image_id"], a["category_id"]) for a in plain["annotations"]]
    assert [(a["image_id"], a["category_id"]) for a in spread["annotations"]] == key
    assert [a["score"] for a in spread["annotations"]] == pytest.approx([a["score"] for a in plain["annotations"]],
                                                                        abs=1e-5)


def test_bf16_runs_the_vit_in_bfloat16_and_finds_the_same_detections(sam3_ckpt, tmp_path):
    """`--dtype bf16` with SAM 3 (the ViT in bfloat16, the detector after it float32): every
    query kept (--min-score 0), each phrase's scores are float32's within 5e-3 and its masks
    cover the same pixels the same number of times on at least 99.5 % of the photo; the run
    record says bf16."""
    from pycocotools import mask as coco_mask

    runs = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / dtype
        r = run_sam("segment", EXAMPLES / "chelsea.jpg", "--text", "dog", "-t", "a cup", "-o", out, "-c", sam3_ckpt,
                    "--min-score", "0", "-f", "coco-rle", "--dtype", dtype)
        assert r.returncode == 0, r.stderr
        assert json.loads((out / "sam-run.json").read_text())["dtype"] == dtype
        runs[dtype] = json.loads(next(out.rglob("chelsea.jpg.json")).read_text())["annotations"]
    for phrase in ("dog", "a cup"):
        mine = {d: [a for a in runs[d] if a["category"] == phrase] for d in runs}
        assert len(mine["fp32"]) == len(mine["bf16"]) == 12  # the tiny detector's queries
        scores = {d: sorted(a["score"] for a in mine[d]) for d in runs}
        assert np.abs(np.subtract(scores["fp32"], scores["bf16"])).max() <= 5e-3
        cover = {d: sum(coco_mask.decode(a["segmentation"]).astype(int) for a in mine[d]) for d in runs}
        assert 0 < cover["fp32"].mean() < 12  # masks with edges
        assert (cover["fp32"] == cover["bf16"]).mean() >= 0.995


@pytest.mark.parametrize("key", ["exemplars", "neg_exemplars"])
def test_a_prompt_file_exemplar_of_no_area_is_refused_as_on_the_command_line(key):
    """An exemplar box of zero width or height shows the detector no pixels: refused with the
    file and line, as `--exemplar` refuses it; a box of the same shape stays a valid box prompt."""
    from sam_cli.errors import PromptError
    from sam_cli.io.sources.base import make_object

    for flat in ([10, 10, 10, 50], [10, 10, 50, 10]):
        extra = {} if key == "exemplars" else {"text": "dog"}
        with pytest.raises(PromptError, match=r"^p\.jsonl:3: .*has no area"):
            make_object(where="p.jsonl:3", **{key: [flat]}, **extra)
        assert make_object(where="p.jsonl:3", box=flat).box is not None
    assert len(make_object(where="p.jsonl:3", text="dog", **{key: [[10, 10, 11, 11]]}).exemplars) == 1
