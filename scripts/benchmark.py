"""Benchmark `sam` beside Meta's reference package: same machine, same run, same random
weights, same threads, same photographs. Prints one table with the ratio per row and the mask
agreement beside each timing, so speed never hides drift.

    python scripts/benchmark.py                      # CPU, vit_b, every row
    python scripts/benchmark.py --rows encoder,boxes # a subset
    python scripts/benchmark.py --device cuda --model vit_h --dtype bf16 --folder-images 20
    python scripts/benchmark.py --model tiny --points-per-side 4 --folder-images 2  # checks the script

Each measurement runs in a fresh subprocess, so its peak memory (resident set on the CPU,
torch's peak allocation on a GPU) is its own. Needs the test extras (`pip install -e '.[test]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
ROWS = ("encoder", "boxes", "point-again", "auto-nofilter", "auto-all", "auto-default", "folder",
        "prompts-folder", "memory-12mp", "resize-12mp", "write-12mp", "regions-12mp", "brush-rle")
#: Boxes per photo in the prompts-folder row.
PROMPT_BOXES = 20
#: --min-mask-region-area in the regions-12mp row.
REGION_AREA = 500
#: Masks in the write-12mp row: the 12 MP photo's largest colour regions.
WRITE_MASKS = 60


# ------------------------------------------------------------------------ shared helpers


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_mb(device: str) -> float:
    """This process's peak: torch's on a GPU; on the CPU the resident set's high-water mark
    since this program started (VmHWM; ru_maxrss would also count the parent's resident set
    at the moment it spawned this process, which Linux carries across exec)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return host_peak_mb()


def host_peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# `sam` run in a process that writes its own peak resident set to argv[1] as it exits
SAM_WITH_PEAK = """import atexit, sys
sys.path.insert(0, {scripts!r})
from benchmark import host_peak_mb
dest = sys.argv.pop(1)
atexit.register(lambda: open(dest, "w").write(str(host_peak_mb())))
sys.argv[0] = "sam"
from sam_cli.cli.app import main
main()
"""


#: The point-again row's child process for the reference: what a user's script does per call.
REF_POINT = """import sys
sys.path[:0] = [{scripts!r}, {tests!r}]
import benchmark, numpy as np, torch
from segment_anything import SamPredictor
ckpt, model, device, image, x, y, out = sys.argv[1:]
torch.set_num_threads({threads})
pred = SamPredictor(benchmark.load("ref", ckpt, model, device, "fp32"))
pred.set_image(benchmark.read(image))
masks, _, _ = pred.predict(point_coords=np.array([[float(x), float(y)]]),
                           point_labels=np.array([1]), multimask_output=False)
np.save(out, masks[0])
open(out + ".peak", "w").write(str(benchmark.host_peak_mb()))
"""


def read(name: str) -> np.ndarray:
    from sam_cli.io.images import read_image

    return read_image(EXAMPLES / name)


def photo_12mp() -> np.ndarray:
    import cv2

    return cv2.resize(read("coffee.jpg"), (4000, 3000), interpolation=cv2.INTER_CUBIC)


def photo_regions(img: np.ndarray, n: int) -> list[dict]:
    """The n largest connected regions of similar colour in img (k-means on Lab colours at a
    quarter of the size), as uncompressed RLEs: object-like masks of many sizes, to write."""
    import cv2

    from sam_cli.masks import masks_to_rle

    h, w = img.shape[:2]
    small = cv2.GaussianBlur(cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA), (5, 5), 0)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, labels, _ = cv2.kmeans(lab, 8, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = cv2.resize(labels.reshape(h // 4, w // 4).astype(np.uint8), (w, h),
                        interpolation=cv2.INTER_NEAREST)
    regions, components = [], {}
    for k in range(8):
        _, components[k], stats, _ = cv2.connectedComponentsWithStats(
            (labels == k).astype(np.uint8), connectivity=4)
        regions += [(int(stats[j, cv2.CC_STAT_AREA]), k, j) for j in range(1, len(stats))]
    return [masks_to_rle(torch.from_numpy(components[k] == j)[None])[0]
            for _, k, j in sorted(regions, reverse=True)[:n]]


def region_records(rles: list[dict], points: list[list[float]] | None = None) -> list:
    """sam's mask records for the RLEs photo_regions gives (each RLE copied: sam may replace a
    record's), with the same made-up scores and, unless given, the same prompt point."""
    from sam_cli.masks import MaskRecord

    h, w = rles[0]["size"]
    points = points or [[1.0, 2.0]] * len(rles)
    return [MaskRecord(dict(r), [0, 0, 1, 1], 0.9, p, 0.95, [0, 0, w, h]) for r, p in zip(rles, points)]


def folder_images(n: int, dest: Path) -> list[Path]:
    """n distinct photographs: the examples, flipped and cropped in turn."""
    import cv2

    names = sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    out = []
    for i in range(n):
        img = read(names[i % len(names)])
        k = i // len(names)
        if k % 2:
            img = img[:, ::-1]
        if k >= 2:
            h, w = img.shape[:2]
            img = img[k * 7 % (h // 5):, k * 11 % (w // 5):]
        p = dest / f"img{i:03d}.jpg"
        cv2.imwrite(str(p), np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
        out.append(p)
    return out


def boxes_prompt() -> np.ndarray:
    """The boxes row's 64 seeded boxes (XYXY) on coffee.jpg."""
    g = np.random.default_rng(0)
    xy = g.uniform(0, 400, (64, 2))
    return np.concatenate([xy, xy + g.uniform(40, 200, (64, 2))], 1).clip(0, [600, 400, 600, 400])


def timed(fn, repeat: int, device: str):
    """(the fastest of `repeat` calls of fn, synchronised, in seconds; the last call's result)."""
    times, result = [], None
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return min(times), result


def make_checkpoint(a: argparse.Namespace, tmp: Path, weights: str) -> tuple[float, float] | None:
    """The run's checkpoint (a.ckpt) and photo folder (a.folder_dir) in tmp: the reference's
    architecture, seed 0, made coherent and confident as `weights` says, saved in Meta's layout.
    Returns the confident weights' (logit scale, IoU shift), or None for plain random weights."""
    from reference import arch_kwargs, build_reference, make_coherent, make_confident

    ref = build_reference(**arch_kwargs(a.model), seed=0)
    if weights == "coherent":
        make_coherent(ref)
    confident = None
    if weights in ("confident", "coherent"):
        confident = make_confident(ref, read("chelsea.jpg"), device=a.device)
    a.ckpt = str(tmp / f"{a.model}.pth")
    torch.save(ref.state_dict(), a.ckpt)
    del ref
    if a.device.startswith("cuda"):
        torch.cuda.empty_cache()  # the workers need the memory, not this process
    folder = tmp / "photos"
    folder.mkdir()
    folder_images(a.folder_images, folder)
    a.folder_dir = str(folder)
    return confident


def add_run_args(ap: argparse.ArgumentParser) -> None:
    """The options this script and scripts/peers_bench.py share, and the worker protocol's
    hidden ones (a measurement's subprocess gets --worker ROW IMPL, --ckpt, --out, --folder-dir)."""
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--folder-images", type=int, default=20)
    ap.add_argument("--folder-points-per-side", type=int, default=32)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", nargs=2, metavar=("ROW", "IMPL"), help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--folder-dir", help=argparse.SUPPRESS)


def run_worker(cmd: list[str], what: str, env: dict | None = None) -> dict | None:
    """One measurement's subprocess: its result (the last line of its stdout, JSON), or None
    with the end of its stderr printed."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        print(f"{what} failed:\n{p.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def load(impl: str, ckpt: str, model: str, device: str, dtype: str):
    if impl == "ref":
        from reference import arch_kwargs, build_reference

        net = build_reference(**arch_kwargs(model))
        net.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        return net.to(device).eval()
    from sam_cli.checkpoints import load_model

    return load_model(checkpoint=ckpt, device=device, dtype=dtype)


AMG_NOFILTER = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)


def amg(impl: str, net, image: np.ndarray, **kw) -> list[dict]:
    """Masks as {rle, iou, stab, point} records, whichever implementation."""
    if impl == "ref":
        from segment_anything import SamAutomaticMaskGenerator

        recs = SamAutomaticMaskGenerator(net, output_mode="uncompressed_rle", **kw).generate(image)
        return [{"rle": r["segmentation"], "iou": r["predicted_iou"],
                 "stab": r["stability_score"], "point": r["point_coords"][0]} for r in recs]
    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator

    recs = AutomaticMaskGenerator(net, AmgSettings(**kw)).generate(image)
    return [{"rle": r.rle, "iou": r.predicted_iou, "stab": r.stability_score, "point": r.point}
            for r in recs]


# ---------------------------------------------------------------------------- workers


def set_allocator(ours: bool, others: str = "system") -> None:
    """In a worker: glibc malloc as `sam` sets it at start (device.tune_allocator; SAM_MALLOC=system
    turns it off) for sam's own measurements, and for the others' too when `others` is "tuned"."""
    if ours or others == "tuned":
        from sam_cli.device import tune_allocator

        tune_allocator()


def allocator_line(others: str, what: str = "reference") -> str:
    tuned = os.environ.get("SAM_MALLOC", "").lower() != "system"
    return (f"# malloc: sam {'tuned (device.tune_allocator)' if tuned else 'system default'}, "
            f"{what} {'tuned' if others == 'tuned' else 'system default'}")


def worker(row: str, impl: str, a: argparse.Namespace, out: Path) -> dict:
    torch.set_num_threads(a.threads)
    set_allocator(impl == "ours", a.ref_allocator)
    dev = a.device
    res: dict = {}
    if row == "folder":
        return folder_worker(impl, a, out)
    if row == "point-again":
        return point_again_worker(impl, a, out)
    if row == "prompts-folder":
        return prompts_worker(impl, a, out)
    if row == "write-12mp":
        return write_worker(impl, a, out)
    if row == "brush-rle":
        return brush_worker(impl, a, out)
    if row == "regions-12mp":
        return regions_worker(impl, a, out)
    net = None if row == "resize-12mp" else load(impl, a.ckpt, a.model, dev, a.dtype if impl == "ours" else "fp32")
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        if row == "resize-12mp":
            # the long side to 1024, as each does before its encoder (the reference: Pillow)
            img = photo_12mp()
            times = []
            for _ in range(a.repeat + 1):
                t = time.perf_counter()
                out_img = resize_to_input(impl, img, dev)
                times.append(time.perf_counter() - t)
            res["seconds"] = min(times[1:])
            np.save(out / f"{impl}.npy", out_img)
        elif row == "encoder":
            img = read("chelsea.jpg")
            pred = predictor(impl, net)
            res["seconds"], _ = timed(lambda: pred.set_image(img), a.repeat, dev)
            np.save(out / f"{impl}.npy", features(impl, pred).float().cpu().numpy())
        elif row == "boxes":
            img, boxes = read("coffee.jpg"), boxes_prompt()
            pred = predictor(impl, net)
            pred.set_image(img)
            res["seconds"], masks = timed(lambda: predict_boxes(impl, pred, boxes), a.repeat, dev)
            np.save(out / f"{impl}.npy", masks)
        else:
            img = photo_12mp() if row == "memory-12mp" else read("chelsea.jpg")
            kw = {} if row == "auto-default" else dict(AMG_NOFILTER)
            if row in ("auto-all", "memory-12mp"):  # NMS off too: every candidate is kept and compared
                kw["box_nms_thresh"] = 1.0
            kw["points_per_side"] = 8 if row == "memory-12mp" else a.points_per_side
            sync(dev)
            t = time.perf_counter()
            recs = amg(impl, net, img, **kw)
            sync(dev)
            res["seconds"] = time.perf_counter() - t
            (out / f"{impl}.json").write_text(json.dumps(recs))
    res["peak_mb"] = peak_mb(dev)
    return res


def resize_to_input(impl: str, img: np.ndarray, device: str) -> np.ndarray:
    if impl == "ref":
        from segment_anything.utils.transforms import ResizeLongestSide

        return ResizeLongestSide(1024).apply_image(img)
    from sam_cli.transforms import resize_uint8, target_size

    t = torch.from_numpy(img).to(device)
    out = resize_uint8(t, target_size(*img.shape[:2], 1024))
    sync(device)
    return out.cpu().numpy()


def predictor(impl: str, net):
    if impl == "ref":
        from segment_anything import SamPredictor

        return SamPredictor(net)
    from sam_cli.predictor import Predictor

    return Predictor(net)


def features(impl: str, pred) -> torch.Tensor:
    """The image embedding, 1×256×64×64: the reference's tensor, sam's ImageFeatures' own."""
    return pred.features if impl == "ref" else pred.features["image_embed"]


def predict_boxes(impl: str, pred, boxes: np.ndarray) -> np.ndarray:
    if impl == "ref":
        tb = pred.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float, device=pred.device), pred.original_size)
        masks, _, _ = pred.predict_torch(None, None, tb, multimask_output=False)
        return masks.cpu().numpy()
    return pred.predict(boxes=boxes, multimask=False).masks


def folder_worker(impl: str, a: argparse.Namespace, out: Path) -> dict:
    """Per-image seconds in the steady state (from the first image's result to the last,
    over n − 1 images: model loading and warm-up excluded) and, as `wall`, the whole run
    from process start divided by n."""
    src = Path(a.folder_dir)
    n = len(list(src.glob("*.jpg")))
    t = time.perf_counter()
    stamps = []
    if impl == "ours":
        peak_file = out / "ours-peak.txt"
        cmd = [sys.executable, "-c", SAM_WITH_PEAK.format(scripts=str(REPO / "scripts")), str(peak_file)]
        cmd += ["auto", str(src), "-o", str(out / "ours"), "-c", a.ckpt, "--device", a.device,
                "--dtype", a.dtype, "--points-per-side", str(a.folder_points_per_side),
                "-q", "-f", "coco-rle"]
        if a.batch_size:
            cmd += ["--batch-size", str(a.batch_size)]
        if a.folder_filters == "off":
            cmd += ["--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
        if a.compile:
            cmd += ["--compile"]
        env = {**os.environ, "SAM_THREADS": str(a.threads)}
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        for _line in p.stdout:  # one JSON line per image, written as each image finishes
            stamps.append(time.perf_counter())
        err = p.stderr.read()
        if p.wait():
            raise SystemExit(err)
        # the CLI's host memory; its GPU memory is not visible from here
        peak = None if a.device.startswith("cuda") else float(peak_file.read_text())
    else:
        # the reference's way: one image at a time, as scripts/amg.py does
        import cv2

        net = load("ref", a.ckpt, a.model, a.device, "fp32")
        from segment_anything import SamAutomaticMaskGenerator

        filters = AMG_NOFILTER if a.folder_filters == "off" else {}
        gen = SamAutomaticMaskGenerator(net, points_per_side=a.folder_points_per_side,
                                        output_mode="coco_rle", **filters)
        for p in sorted(src.glob("*.jpg")):
            img = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
            recs = gen.generate(img)
            (out / f"{p.stem}.json").write_text(json.dumps(recs))
            sync(a.device)
            stamps.append(time.perf_counter())
        peak = peak_mb(a.device)
    wall = (time.perf_counter() - t) / n
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else wall
    return {"seconds": steady, "wall": wall, "peak_mb": peak}


def folder_boxes(src: Path) -> dict[str, list[list[float]]]:
    """PROMPT_BOXES seeded boxes per photo of the folder, XYXY inside it, by file name."""
    import cv2

    g = np.random.default_rng(0)
    boxes = {}
    for p in sorted(src.glob("*.jpg")):
        h, w = cv2.imread(str(p)).shape[:2]
        x0, y0 = g.uniform(0, w * 0.8, PROMPT_BOXES), g.uniform(0, h * 0.8, PROMPT_BOXES)
        bw, bh = g.uniform(0.1, 0.5, PROMPT_BOXES) * w, g.uniform(0.1, 0.5, PROMPT_BOXES) * h
        boxes[p.name] = np.stack([x0, y0, np.minimum(x0 + bw, w), np.minimum(y0 + bh, h)], 1).round(1).tolist()
    return boxes


def prompts_worker(impl: str, a: argparse.Namespace, out: Path) -> dict:
    """A folder of photos with PROMPT_BOXES boxes each, whole runs per image (start-up and
    model loading included, as a user waits for them). The reference's way: one process
    around SamPredictor, each image set, its boxes decoded in one predict_torch call (its
    fastest), masks written as COCO RLE. sam's: `sam segment --prompts` over a JSON Lines
    file; and, as `loop`, a shell loop of single-image `sam segment` calls, one process each."""
    src = Path(a.folder_dir)
    boxes = folder_boxes(src)
    n = len(boxes)
    env = {**os.environ, "SAM_THREADS": str(a.threads)}
    if impl == "ref":
        import cv2
        from pycocotools import mask as coco_mask
        from segment_anything import SamPredictor

        t = time.perf_counter()
        pred = SamPredictor(load("ref", a.ckpt, a.model, a.device, "fp32"))
        for name, bx in boxes.items():
            img = cv2.cvtColor(cv2.imread(str(src / name)), cv2.COLOR_BGR2RGB)
            pred.set_image(img)
            tb = pred.transform.apply_boxes_torch(torch.tensor(bx, device=pred.device), img.shape[:2])
            masks, _, _ = pred.predict_torch(None, None, tb, multimask_output=False)
            enc = coco_mask.encode(np.asfortranarray(masks[:, 0].cpu().numpy().transpose(1, 2, 0).astype(np.uint8)))
            (out / f"ref-{name}.json").write_text(json.dumps([e["counts"].decode() for e in enc]))
        sync(a.device)
        return {"seconds": (time.perf_counter() - t) / n, "peak_mb": peak_mb(a.device)}
    prompts = out / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"image": str(src / k), "objects": [{"box": b} for b in v]}) + "\n"
                               for k, v in boxes.items()))
    peak_file = out / "ours-peak.txt"
    sam = [sys.executable, "-c", SAM_WITH_PEAK.format(scripts=str(REPO / "scripts")), str(peak_file)]
    common = ["-c", a.ckpt, "--device", a.device, "--dtype", a.dtype, "-q"]
    t = time.perf_counter()
    stamps = []
    p = subprocess.Popen(sam + ["segment", "--prompts", str(prompts), "-o", str(out / "ours"), "-f", "coco-rle",
                                *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    for _line in p.stdout:  # one JSON line per image, written as each image finishes
        stamps.append(time.perf_counter())
    err = p.stderr.read()
    if p.wait():
        raise SystemExit(err[-3000:])
    secs = (time.perf_counter() - t) / n
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else secs
    peak = None if a.device.startswith("cuda") else float(peak_file.read_text())
    t = time.perf_counter()
    loop_peak = 0.0
    for name, bx in boxes.items():
        args = [x for b in bx for x in ("--box", ",".join(map(str, b)))]
        p = subprocess.run(sam + ["segment", str(src / name), *args, "-o", str(out / f"loop-{name}.json"),
                                  *common], capture_output=True, text=True, env=env)
        if p.returncode:
            raise SystemExit(p.stderr[-3000:])
        if not a.device.startswith("cuda"):
            loop_peak = max(loop_peak, float(peak_file.read_text()))
    loop = (time.perf_counter() - t) / n
    return {"seconds": secs, "steady": steady, "peak_mb": peak, "loop": loop, "loop_peak_mb": loop_peak or None}


def brush_worker(impl: str, a: argparse.Namespace, out: Path) -> dict:
    """Label Studio's brush RLE of an 800×800 mask of pixel noise (320,000 runs, what a random
    model's masks look like): the reference here is Label Studio's own encoder
    (label-studio-converter's mask2rle); sam's is -f labelstudio's. Each result decoded back by
    Label Studio's decoder, for the agreement."""
    from label_studio_converter.brush import decode_rle

    mask = np.random.default_rng(0).random((800, 800)) < 0.5
    if impl == "ref":
        from label_studio_converter.brush import mask2rle

        def encode():
            return mask2rle(mask.astype(np.uint8) * 255)
    else:
        from sam_cli.io.formats.labelstudio import brush_rle

        def encode():
            return brush_rle(mask)
    times, rle = [], None
    for _ in range(a.repeat):
        t = time.perf_counter()
        rle = encode()
        times.append(time.perf_counter() - t)
    np.save(out / f"{impl}.npy", np.reshape(decode_rle(rle), (800, 800, 4))[:, :, 3] > 0)
    return {"seconds": min(times), "peak_mb": peak_mb("cpu")}


def write_worker(impl: str, a: argparse.Namespace, out: Path) -> dict:
    """A 12 MP photo's masks, from the generator's RLEs to a folder of PNGs and metadata.csv:
    the reference's way is scripts/amg.py's (each mask decoded whole, as the generator's
    binary-mask output does, then cv2.imwrite of mask * 255); sam's is `sam auto -f png`'s
    writer. Best of `repeat`, each into a new folder."""
    import cv2

    rles = json.loads((out.parent / "regions-12mp.json").read_text())
    img = photo_12mp()
    h, w = img.shape[:2]
    times = []
    for k in range(a.repeat):
        dest = out / impl / str(k)
        t = time.perf_counter()
        if impl == "ref":
            from segment_anything.utils.amg import rle_to_mask

            dest.mkdir(parents=True)
            lines = ["id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,"
                     "predicted_iou,stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"]
            for i, rle in enumerate(rles):
                mask = rle_to_mask(rle)
                cv2.imwrite(str(dest / f"{i}.png"), mask * 255)
                lines.append(f"{i},{int(mask.sum())},0,0,1,1,1.0,2.0,0.9,0.95,0,0,{w},{h}")
            (dest / "metadata.csv").write_text("\n".join(lines) + "\n")
        else:
            from sam_cli.io.outputs import OutputLayout

            recs = region_records(rles)
            OutputLayout(dest, ("png",)).write("photo.jpg", img, recs)
            dest = dest / "photo.jpg.masks"
        times.append(time.perf_counter() - t)
    peak = peak_mb("cpu")  # before the check below reads the files back
    bits = []
    for i in range(len(rles)):  # each mask as bits, where it is 255; anything else spoils it
        png = cv2.imread(str(dest / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        bits.append(np.packbits(png == 255) if set(np.unique(png)) <= {0, 255} else np.zeros(0, np.uint8))
    np.save(out / f"{impl}.npy", np.concatenate(bits))
    return {"seconds": min(times), "peak_mb": peak}


def regions_worker(impl: str, a: argparse.Namespace, out: Path) -> dict:
    """Automatic mode's last step with --min-mask-region-area (holes and islands below it
    removed from every mask, then NMS again), on a 12 MP photo's masks: the reference's
    `SamAutomaticMaskGenerator.postprocess_small_regions` against sam's
    `generator.postprocess_small_regions`. Best of `repeat`; the records of the last run are
    kept for the agreement."""
    rles = json.loads((out.parent / "regions-12mp.json").read_text())
    points = [[float(i), float(i)] for i in range(len(rles))]  # pairs ref and ours up
    times = []
    for _ in range(a.repeat):
        if impl == "ref":
            from segment_anything import SamAutomaticMaskGenerator
            from segment_anything.utils.amg import MaskData

            data = MaskData(rles=[dict(r) for r in rles], boxes=torch.zeros(len(rles), 4),
                            iou_preds=torch.full((len(rles),), 0.9), points=np.array(points))
            t = time.perf_counter()
            data = SamAutomaticMaskGenerator.postprocess_small_regions(data, REGION_AREA, 0.7)
            times.append(time.perf_counter() - t)
            recs = [{"rle": r, "iou": 0.9, "stab": 0.0, "point": list(map(float, p))}
                    for r, p in zip(data["rles"], data["points"])]
        else:
            from sam_cli.automatic.generator import postprocess_small_regions

            records = region_records(rles, points)
            t = time.perf_counter()
            records = postprocess_small_regions(records, REGION_AREA, 0.7)
            times.append(time.perf_counter() - t)
            recs = [{"rle": r.rle, "iou": 0.9, "stab": 0.0, "point": r.point} for r in records]
    (out / f"{impl}.json").write_text(json.dumps(recs))
    return {"seconds": min(times), "peak_mb": peak_mb("cpu")}


def point_again_worker(impl: str, a: argparse.Namespace, out: Path) -> dict:
    """A new process per prompt on an image already seen, start to finish (imports, model
    loading, the image, the mask): the reference's way is a script around SamPredictor, which
    embeds the image every time; sam's is `sam segment --embedding-cache`, timed after a first
    call (`cold`, also timed) has filled the cache. Best of `repeat` calls."""
    image, first, point = "chelsea.jpg", (120, 90), (200, 150)
    env = {**os.environ, "SAM_THREADS": str(a.threads)}

    def call(cmd: list[str]) -> float:
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode:
            raise SystemExit(p.stderr[-3000:])
        return time.perf_counter() - t

    if impl == "ref":
        script = REF_POINT.format(scripts=str(REPO / "scripts"), tests=str(REPO / "tests"),
                                  threads=a.threads)
        dest = str(out / "ref.npy")
        args = [a.ckpt, a.model, a.device, image, *map(str, point), dest]
        secs = min(call([sys.executable, "-c", script, *args]) for _ in range(a.repeat))
        peak = None if a.device.startswith("cuda") else float(Path(dest + ".peak").read_text())
        return {"seconds": secs, "peak_mb": peak}
    cache, png, peak_file = out / "embeddings", out / "ours.png", out / "ours-peak.txt"

    def sam(xy: tuple[int, int]) -> list[str]:
        return [sys.executable, "-c", SAM_WITH_PEAK.format(scripts=str(REPO / "scripts")),
                str(peak_file), "segment", str(EXAMPLES / image), "--point", "{},{}".format(*xy),
                "-o", str(png), "-c", a.ckpt, "--device", a.device, "--dtype", a.dtype,
                "--embedding-cache", str(cache), "-q"]

    cold = call(sam(first))
    cold_peak = None if a.device.startswith("cuda") else float(peak_file.read_text())
    secs = min(call(sam(point)) for _ in range(a.repeat))
    import cv2

    np.save(out / "ours.npy", cv2.imread(str(png), cv2.IMREAD_GRAYSCALE) > 0)
    peak = None if a.device.startswith("cuda") else float(peak_file.read_text())
    return {"seconds": secs, "cold": cold, "cold_peak_mb": cold_peak, "peak_mb": peak}


# ------------------------------------------------------------------------- agreement


def agreement(row: str, out: Path) -> str:
    if row == "folder":
        return "(parity: other rows)"
    if row == "prompts-folder":  # every box's mask, the reference's against sam's
        from pycocotools import mask as coco_mask

        same = total = 0
        for f in sorted(out.glob("ref-*.json")):
            name = f.name[4:-5]
            ref = json.loads(f.read_text())
            ours = json.loads(next((out / "ours").rglob(f"{name}.json")).read_text())
            for counts, ann in zip(ref, ours["annotations"], strict=True):
                h, w = ann["segmentation"]["size"]
                r = coco_mask.decode({"size": [h, w], "counts": counts.encode()})
                o = coco_mask.decode({"size": [h, w], "counts": ann["segmentation"]["counts"].encode()})
                same, total = same + int((r == o).sum()), total + h * w
        return f"{same / total * 100:.3f}% pixels equal" if total else "no masks"
    if row == "resize-12mp":
        r, o = np.load(out / "ref.npy"), np.load(out / "ours.npy")
        return f"{(r == o).mean() * 100:.3f}% of pixel values equal" if r.shape == o.shape else "shapes differ"
    if row == "encoder":
        r, o = np.load(out / "ref.npy"), np.load(out / "ours.npy")
        return f"embedding rel. L2 {np.linalg.norm(r - o) / np.linalg.norm(r):.1e}"
    if row in ("boxes", "point-again", "write-12mp", "brush-rle"):
        r, o = np.load(out / "ref.npy"), np.load(out / "ours.npy")
        return f"{(r == o).mean() * 100:.3f}% pixels equal" if r.shape == o.shape else "shapes differ"
    from sam_cli.masks import rle_to_mask

    r = json.loads((out / "ref.json").read_text())
    o = json.loads((out / "ours.json").read_text())
    if row == "regions-12mp":  # each record's point is its index: the same mask, run for run
        ours = {tuple(b["point"]): b["rle"] for b in o}
        same = sum(ours.get(tuple(a["point"])) == a["rle"] for a in r)
        return f"{same}/{len(r)} ref masks identical ({len(o)} ours)"
    by_point: dict[tuple, list[int]] = {}
    for j, b in enumerate(o):
        by_point.setdefault(tuple(np.round(b["point"], 3).tolist()), []).append(j)
    # matched: same prompt point, predicted IoU within 1e-3, mask IoU >= 0.99, one to one;
    # mean IoU: each reference mask against the best of ours at its point (0 where none)
    used, matched, best = set(), 0, []
    for a in r:
        ma, top, hit = None, 0.0, False
        for j in by_point.get(tuple(np.round(a["point"], 3).tolist()), []):
            b = o[j]
            if a["rle"]["counts"] == b["rle"]["counts"]:  # equal runs: the same mask
                iou = 1.0
            else:
                ma = rle_to_mask(a["rle"]) if ma is None else ma
                mb = rle_to_mask(b["rle"])
                u = (ma | mb).sum()
                iou = float((ma & mb).sum() / u) if u else 1.0
            top = max(top, iou)
            if not hit and j not in used and abs(a["iou"] - b["iou"]) <= 1e-3 and iou >= 0.99:
                used.add(j)
                matched += 1
                hit = True
        best.append(top)
    mean = f", mean IoU {np.mean(best):.4f}" if best else ""
    return f"{matched}/{len(r)} ref masks matched ({len(o)} ours){mean}"


def matmul_peak(device: str, dtype: str) -> float:
    n = 2048 if device == "cpu" else 8192
    dt = torch.bfloat16 if dtype == "bf16" and device != "cpu" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    a @ b
    sync(device)
    reps = 3 if device == "cpu" else 20
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def main() -> None:
    from sam_cli.registry import MODELS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="vit_b", choices=[*MODELS, "tiny"],
                    help="tiny: the tests' 4-block model, to check this script in seconds")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--weights", default="confident", choices=["confident", "coherent", "random"],
                    help="confident (default): random weights with mask logits scaled and predicted "
                         "IoUs raised (tests/reference.make_confident), so that default filters keep "
                         "masks as a trained model's do; coherent: the same, with masks made regions "
                         "instead of pixel noise (tests/reference.make_coherent), as a trained model's "
                         "are, which is what the CPU's full-resolution step (TiledMasks) depends on; "
                         "random: plain random weights, whose masks never pass the default filters "
                         "(the earliest tables)")
    ap.add_argument("--rows", default=",".join(ROWS))
    add_run_args(ap)
    ap.add_argument("--folder-filters", default="default", choices=["default", "off"])
    ap.add_argument("--batch-size", type=int, default=0,
                    help="`sam auto --batch-size` in the folder row (default: sam's own default)")
    ap.add_argument("--ref-allocator", default="system", choices=["system", "tuned"],
                    help="give the reference sam's malloc setting too (device.tune_allocator), "
                         "to see how much of a ratio it accounts for")
    ap.add_argument("--compile", action="store_true",
                    help="the folder row runs `sam auto --compile` (the other rows are not compiled)")
    ap.add_argument("--save-checkpoint", metavar="PATH",
                    help="keep the benchmark's checkpoint here (scripts/gpu_check.sh profiles it)")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))

    if a.worker:
        res = worker(a.worker[0], a.worker[1], a, Path(a.out))
        print(json.dumps(res))
        return

    tmp = Path(tempfile.mkdtemp(prefix="sam-bench-"))
    spec = MODELS.get(a.model)  # None for tiny
    confident = make_checkpoint(a, tmp, a.weights)

    torch.set_num_threads(a.threads)
    peak = matmul_peak(a.device, a.dtype)
    dev_name = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"CPU, {a.threads} threads"
    print(f"# sam benchmark: {a.model}, {a.weights} random weights, {a.dtype} (ours; reference fp32), "
          f"{dev_name}, torch {torch.__version__}")
    peak_dtype = "bf16" if a.dtype == "bf16" and a.device != "cpu" else "fp32"
    print(f"# matmul peak measured in this run: {peak:.0f} GFLOP/s ({peak_dtype})")
    if confident:
        scale, shift = confident
        print(f"# confident weights: mask logits x{scale:.0f}, predicted IoUs {shift:+.3f} "
              "(tests/reference.make_confident)")
    if a.weights == "coherent":
        print("# coherent masks: the decoder's upscaling kernels shared across their 2×2 positions "
              "(tests/reference.make_coherent)")
    print(allocator_line(a.ref_allocator))
    if a.compile:
        print("# folder row: `sam auto --compile` (torch.compile; compiling is in the start-up figure)")
    rows = [r for r in a.rows.split(",") if r]
    if {"write-12mp", "regions-12mp"} & set(rows):
        (tmp / "regions-12mp.json").write_text(json.dumps(photo_regions(photo_12mp(), WRITE_MASKS)))
    results = {}
    failed = 0
    for row in rows:
        out = tmp / row
        out.mkdir()
        res = {}
        for impl in ("ref", "ours"):
            cmd = [sys.executable, __file__, "--worker", row, impl, "--ckpt", a.ckpt, "--out", str(out),
                   "--device", a.device, "--model", a.model, "--dtype", a.dtype,
                   "--threads", str(a.threads), "--repeat", str(a.repeat),
                   "--points-per-side", str(a.points_per_side), "--folder-dir", a.folder_dir,
                   "--folder-points-per-side", str(a.folder_points_per_side),
                   "--batch-size", str(a.batch_size), "--folder-filters", a.folder_filters,
                   "--ref-allocator", a.ref_allocator] + (["--compile"] if a.compile else [])
            res[impl] = run_worker(cmd, f"{row} {impl}")
            failed += res[impl] is None
        res["agreement"] = agreement(row, out) if res["ref"] and res["ours"] else "-"
        results[row] = res
        print_row(row, res, a, spec, first=row == rows[0])
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "matmul_gflops": peak, "rows": results}, indent=1))
    if a.save_checkpoint:
        shutil.move(a.ckpt, a.save_checkpoint)
    shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        raise SystemExit(f"{failed} measurement(s) failed")


LABELS = {
    "encoder": "image encoder, s/image",
    "boxes": "prompted: 64 boxes, one image, s",
    "point-again": "prompted: a point on an image already seen, a new process per call, s",
    "auto-nofilter": "automatic, {pps}x{pps} grid, filters off, s/image",
    "auto-all": "automatic, {pps}x{pps} grid, filters and NMS off (every candidate kept), s/image",
    "auto-default": "automatic, {pps}x{pps} grid, default filters, s/image",
    "folder": "`sam auto` folder of {n} photos ({fpps}x{fpps}, {ff} filters), s/image, steady state",
    "prompts-folder": "prompted: a folder of {n} photos with {pb} boxes each, s/image, whole run with "
                      "start-up (reference: a SamPredictor loop; sam: `sam segment --prompts`)",
    "memory-12mp": "automatic on a 12 MP photo (8x8 grid, filters and NMS off), s",
    "resize-12mp": "resize a 12 MP photo to the encoder's input, s",
    "brush-rle": "Label Studio brush RLE of an 800x800 noise mask, s (reference: Label Studio's encoder)",
    "regions-12mp": "remove holes and islands under {ra} pixels from a 12 MP photo's {wm} masks "
                    "(`--min-mask-region-area {ra}`), then NMS, s",
    "write-12mp": "write a 12 MP photo's {wm} masks (its largest colour regions) as PNGs and "
                  "metadata.csv, from the generator's RLEs, s (reference: scripts/amg.py's way; "
                  "sam: `sam auto -f png`'s writer, {pt} threads)",
}


def print_row(row: str, res: dict, a, spec, first: bool) -> None:
    if first:
        print("| row | reference | sam | speed-up | agreement | peak MB ref | peak MB sam |")
        print("|---|---:|---:|---:|---|---:|---:|")
    from sam_cli.io.formats.png import PNG_THREADS

    label = LABELS[row].format(pps=a.points_per_side, n=a.folder_images, fpps=a.folder_points_per_side,
                               ff=a.folder_filters, wm=WRITE_MASKS, pt=PNG_THREADS,
                               ra=REGION_AREA, pb=PROMPT_BOXES)
    r, o = res["ref"], res["ours"]
    rs = f"{r['seconds']:.3f}" if r else "failed"
    os_ = f"{o['seconds']:.3f}" if o else "failed"
    ratio = f"{r['seconds'] / o['seconds']:.2f}x" if r and o else "-"
    extra = ""
    if row == "encoder" and r and o and spec:
        extra = f" ({spec.gflop / r['seconds']:.0f} vs {spec.gflop / o['seconds']:.0f} GFLOP/s)"
    if row == "point-again" and o:
        cold_mb = "" if o.get("cold_peak_mb") is None else f" and {o['cold_peak_mb']:.0f} MB"
        extra = (f" (sam: `sam segment --embedding-cache`, warm; {o['cold']:.3f} s{cold_mb} "
                 "for the call that filled it)")
    if row == "prompts-folder" and o:
        loop_mb = "" if o.get("loop_peak_mb") is None else f", peak {o['loop_peak_mb']:.0f} MB"
        extra = (f" (sam in the steady state, from the first image's line to the last: {o['steady']:.3f} "
                 f"s/image; a shell loop of single-image `sam segment`: {o['loop']:.3f} s/image{loop_mb})")
    if row == "folder" and r and o:
        extra = f" (with start-up and model loading: {r['wall']:.3f} vs {o['wall']:.3f})"
    print(f"| {label}{extra} | {rs} | {os_} | {ratio} | {res['agreement']} | "
          f"{mb(r)} | {mb(o)} |", flush=True)


def mb(res: dict | None) -> str:
    return "-" if not res or res.get("peak_mb") is None else f"{res['peak_mb']:.0f}"


if __name__ == "__main__":
    main()
