"""Where the image encoder spends its time on the CPU: one vit_b (or --model, SAM 1 or SAM 2.1)
forward with random weights, sam's threads and allocator setting, the top operators by self
time, the GFLOP/s of its matmuls and attention, and a matmul peak measured in the same run.

    python scripts/cpu_profile.py --model vit_b --threads 2
    python scripts/cpu_profile.py --attention   # the attention's band settings compared
    python scripts/cpu_profile.py --decoder --checkpoint vit_b.pth --decoder-batches 8,16,24
        # the mask decoder per decoder-call size: automatic mode's decode of one photo (default
        # filters, filters off) and 64 boxes; a checkpoint from
        # `scripts/benchmark.py --save-checkpoint` has confident weights, so default filters
        # keep masks as a trained model's do
    python scripts/cpu_profile.py --decoder-ops  # one decoder call as automatic mode makes it
        # (16 prompts, the example photo's grid, all upscaled) under the profiler: each
        # operator's share, and the matmuls' GFLOP/s against the run's matmul peak
    python scripts/cpu_profile.py --masks   # 12 MP mask post-processing, sam's way and the plain way,
        # and automatic mode's whole full-resolution step with every pixel against TiledMasks
    python scripts/cpu_profile.py --steps --checkpoint vit_b.pth [--full-res dense]
        # automatic mode on one photo (32×32, filters off) under the profiler: the host time of
        # each of its steps (the generator's record_function labels), then the top operators
    python scripts/cpu_profile.py --compile  # torch.compile (Inductor, as `sam auto --compile`)
        # against eager on this CPU: the encoder on one image and the decoder on 16 prompts,
        # with the seconds spent compiling (about 10 minutes on a 2-core machine)
    python scripts/cpu_profile.py --writes   # `sam auto`'s outputs of 60 masks (a photo's
        # largest colour regions) per format, on the photo and on it at 12 MP: sam's writer
        # against the whole-image way (every mask decoded to the whole image), and one mask's
        # PNG with OpenCV's default row filter against none
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from sam_cli.registry import MODELS

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_b", choices=[n for n, m in MODELS.items() if m.family in ("sam1", "sam2")],
                    help="the encoder profile's model (SAM 1 or SAM 2.1); the other modes take SAM 1's")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--attention", action="store_true",
                    help="time one global and one windowed attention per band setting instead")
    ap.add_argument("--decoder", action="store_true",
                    help="time the mask decoder per decoder-call size instead")
    ap.add_argument("--decoder-batches", default="16,32")
    ap.add_argument("--decoder-rows", default="default,off,boxes",
                    help="with --decoder: which of automatic mode (default filters, filters off) and 64 boxes")
    ap.add_argument("--decoder-ops", action="store_true",
                    help="profile one decoder call (16 prompts) by operator instead")
    ap.add_argument("--checkpoint", help="with --decoder: this checkpoint, not random weights")
    ap.add_argument("--rounds", type=int, default=2, help="with --decoder: best of this many")
    ap.add_argument("--masks", action="store_true",
                    help="time the full-resolution mask steps on a 12 MP photo instead")
    ap.add_argument("--tiles", default="32,64,128", help="with --masks: TiledMasks tile sizes")
    ap.add_argument("--compile", action="store_true",
                    help="time torch.compile against eager for the encoder and decoder instead")
    ap.add_argument("--writes", action="store_true",
                    help="time sam auto's output formats for 60 masks instead")
    ap.add_argument("--steps", action="store_true",
                    help="time automatic mode's steps on one photo instead (filters off)")
    ap.add_argument("--full-res", default="auto", choices=["auto", "dense", "tiled"],
                    help="with --steps: how full-resolution masks are made (auto: sam's choice)")
    ap.add_argument("--points-per-side", type=int, default=32, help="with --steps")
    a = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile

    from sam_cli.checkpoints import build_from_arch
    from sam_cli.device import tune_allocator

    tune_allocator()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    spec = MODELS[a.model]
    if spec.family != "sam1" and (a.attention or a.decoder_ops or a.steps or a.compile):
        ap.error("--attention, --decoder-ops, --steps and --compile profile SAM 1 models")
    if a.attention:
        attention_table(spec)
        return
    if a.decoder:
        decoder_table(a, spec)
        return
    if a.decoder_ops:
        decoder_ops_table(a, spec)
        return
    if a.masks:
        masks_table([int(t) for t in a.tiles.split(",")])
        return
    if a.steps:
        steps_table(a, spec)
        return
    if a.writes:
        writes_table()
        return
    if a.compile:
        compile_table(spec)
        return
    net = build_from_arch(spec.arch, family=spec.family).eval()
    enc = net.image_encoder if spec.family == "sam1" else net.encode  # SAM 2: trunk and neck
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        enc(x)
        t = time.perf_counter()
        enc(x)
        sec = time.perf_counter() - t
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            enc(x)
    from benchmark import matmul_peak

    peak = matmul_peak("cpu", "fp32")
    rate = f" ({spec.gflop / sec:.0f} GFLOP/s)" if spec.gflop else ""  # the registry's count, where it has one
    print(f"# {a.model} encoder, {a.threads} threads: {sec:.2f} s{rate}; "
          f"matmul peak in this run {peak:.0f} GFLOP/s")
    # the rate of the encoder's own matmuls and attention, from the profiled call's shapes
    kinds = {"matmuls": 0.0, "attention": 0.0}
    busy = dict.fromkeys(kinds, 0.0)
    for ev in prof.key_averages(group_by_input_shape=True):
        if "scaled_dot_product" in ev.key and ev.input_shapes and len(ev.input_shapes[0]) == 4:
            (b, h, lq, d), lk = ev.input_shapes[0], ev.input_shapes[1][2]
            kinds["attention"] += 4.0 * b * h * lq * lk * d * ev.count
            busy["attention"] += ev.self_cpu_time_total / 1e6
        elif (f := _matmul_flop(ev.key, ev.input_shapes)) > 0:
            kinds["matmuls"] += f * ev.count
            busy["matmuls"] += ev.self_cpu_time_total / 1e6
    total = prof.key_averages().self_cpu_time_total / 1e6
    for k in kinds:
        if busy[k]:
            print(f"# {k}: {busy[k]:.2f} s of {total:.2f} s profiled, {kinds[k] / busy[k] / 1e9:.0f} GFLOP/s")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def _matmul_flop(op: str, shapes: list) -> float:
    """FLOPs of one call of a matmul operator, from the profiler's input shapes (0 for others)."""
    if op == "aten::addmm":
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2.0 * m * k * n
    if op == "aten::mm":
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2.0 * m * k * n
    if op in ("aten::bmm", "aten::baddbmm", "aten::baddbmm_"):
        a_, b_ = shapes[-2:] if op == "aten::bmm" else shapes[1:3]
        return 2.0 * max(a_[0], b_[0]) * a_[1] * a_[2] * b_[2]
    return 0.0


def decoder_ops_table(a: argparse.Namespace, spec, prompts: int = 16, rounds: int = 3) -> None:
    """One mask-decoder call as automatic mode makes it on the CPU: `prompts` point prompts on
    the example photo's grid of embedding cells, every prompt upscaled (filters off). Profiled
    `rounds` times; per operator and input shapes: milliseconds per call, share of the
    decoder's time, and for matmuls the GFLOP/s against a matmul peak measured in this run."""
    from pathlib import Path

    from torch.profiler import ProfilerActivity, profile

    from sam_cli.checkpoints import build_from_arch, load_model
    from sam_cli.io.images import read_image
    from sam_cli.transforms import target_size

    net = (load_model(checkpoint=a.checkpoint, device="cpu") if a.checkpoint
           else build_from_arch(spec.arch).eval())
    img = read_image(Path(__file__).resolve().parents[1] / "examples" / "chelsea.jpg")
    h, w = target_size(*img.shape[:2], 1024)
    grid = (-(-h // 16), -(-w // 16))
    pe = net.prompt_encoder
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        emb = torch.randn(1, 256, 64, 64, generator=gen)
        points = torch.rand(prompts, 1, 2, generator=gen) * torch.tensor([w, h])
        sparse, dense = pe(points=(points, torch.ones(prompts, 1, dtype=torch.long)),
                           boxes=None, masks=None)
        dense_pe = pe.get_dense_pe()

        def call():
            return net.mask_decoder(emb, dense_pe, sparse, dense, True, grid_hw=grid)

        for _ in range(2):
            call()
        t = time.perf_counter()
        for _ in range(rounds):
            call()
        sec = (time.perf_counter() - t) / rounds
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(rounds):
                call()
    from benchmark import matmul_peak

    peak = matmul_peak("cpu", "fp32")
    events = [e for e in prof.key_averages(group_by_input_shape=True) if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    mm_time = mm_flop = 0.0
    rows = []
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total):
        flop = _matmul_flop(e.key, e.input_shapes) * e.count
        ms = e.self_cpu_time_total / 1e3 / rounds
        if flop:
            mm_time, mm_flop = mm_time + e.self_cpu_time_total, mm_flop + flop  # µs, FLOP
        rows.append((e.key, e.input_shapes, e.count // rounds, ms,
                     e.self_cpu_time_total / total, flop / (e.self_cpu_time_total / 1e6) / 1e9))
    print(f"# mask decoder (vit_b's, vit_l's and vit_h's are alike), one call of {prompts} point prompts, "
          f"grid {grid[0]}×{grid[1]} "
          f"(chelsea.jpg), all upscaled, {torch.get_num_threads()} threads: {sec * 1e3:.0f} ms per call; "
          f"matmul peak in this run {peak:.0f} GFLOP/s")
    print(f"# matmuls: {mm_time / total * 100:.0f} % of the profiled time at "
          f"{mm_flop / (mm_time / 1e6) / 1e9:.0f} GFLOP/s ({mm_flop / rounds / 1e9:.1f} GFLOP per call); "
          f"the rest: {100 - mm_time / total * 100:.0f} %")
    print("| operator | input shapes | calls | ms per decoder call | share | GFLOP/s |")
    print("|---|---|---:|---:|---:|---:|")
    for key, shapes, n, ms, share, rate in rows[:20]:
        shown = ", ".join("×".join(map(str, s)) for s in shapes if s)
        print(f"| {key} | {shown} | {n} | {ms:.1f} | {share * 100:.1f} % | {f'{rate:.0f}' if rate else ''} |")


def steps_table(a: argparse.Namespace, spec) -> None:
    """generate() on the example photo, --points-per-side, IoU and stability filters off, once to
    warm up, then once under the profiler (gpu_profile.step_table)."""
    from pathlib import Path

    from gpu_profile import step_table

    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
    from sam_cli.checkpoints import build_from_arch, load_model
    from sam_cli.io.images import read_image

    net = (load_model(checkpoint=a.checkpoint, device="cpu") if a.checkpoint
           else build_from_arch(spec.arch).eval())
    img = read_image(Path(__file__).resolve().parents[1] / "examples" / "chelsea.jpg")
    n = a.points_per_side
    gen = AutomaticMaskGenerator(net, AmgSettings(points_per_side=n, pred_iou_thresh=0.0,
                                                  stability_score_thresh=0.0))
    if a.full_res != "auto":
        gen.tiled = a.full_res == "tiled"
    with torch.inference_mode():
        t = time.perf_counter()
        k = len(gen.generate(img))
        print(f"# automatic mode, {n}x{n}, filters off, full resolution: {a.full_res}: "
              f"{time.perf_counter() - t:.2f} s, {k} masks (warm-up run); the profiled run:")
        step_table(gen, img, "cpu")


def attention_table(spec) -> None:
    """Seconds for one global and one windowed block's attention (after qkv), per setting of
    heads per call and mask band budget; the first row is sam's setting."""
    from sam_cli.models.sam1.image_encoder import Attention, _window_partition

    dim, nh, win = spec.arch.embed_dim, spec.arch.num_heads, spec.arch.window_size
    torch.manual_seed(0)
    glob, local = Attention(dim, nh, (64, 64)), Attention(dim, nh, (win, win))
    for m in (glob, local):
        torch.nn.init.normal_(m.rel_pos_h, std=0.02)
        torch.nn.init.normal_(m.rel_pos_w, std=0.02)
    qkv = torch.randn(1, 64, 64, 3 * dim)
    windows, _ = _window_partition(qkv, win, fill=torch.zeros(3 * dim))
    settings = [(Attention.CPU_HEADS, Attention.CPU_MASK_BYTES), (nh, 128 * 2**20),
                (nh, 4 * 2**20), (2, 4 * 2**20), (1, 16 * 2**20)]

    def seconds(m: Attention, x: torch.Tensor, n: int) -> float:
        m._attend(x)
        t = time.perf_counter()
        for _ in range(n):
            m._attend(x)
        return (time.perf_counter() - t) / n

    print(f"# {spec.name} attention, {torch.get_num_threads()} threads, seconds per block")
    print("| heads per call | mask band | global 64×64 | windowed 25×14×14 |")
    print("|---:|---:|---:|---:|")
    with torch.inference_mode():
        for heads, budget in settings:
            Attention.CPU_HEADS, Attention.CPU_MASK_BYTES = heads, budget
            print(f"| {heads} | {budget >> 20} MB | {seconds(glob, qkv, 3):.3f} | "
                  f"{seconds(local, windows, 10):.4f} |")
    Attention.CPU_HEADS, Attention.CPU_MASK_BYTES = settings[0]


def decoder_table(a: argparse.Namespace, spec) -> None:
    """Seconds of the mask decoder per decoder-call size, factored (models/sam1/factored.py,
    sam's CPU path) and plain (TwoWayTransformer), sizes and paths interleaved round by round
    so that a slow spell of the machine hits them alike; the best round is printed. Each
    automatic run makes the image's shared products anew, as a run does once per image."""
    from pathlib import Path

    import numpy as np

    import sam_cli.models.sam1.factored as factored
    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
    from sam_cli.checkpoints import build_from_arch, load_model
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    net = (load_model(checkpoint=a.checkpoint, device="cpu") if a.checkpoint
           else build_from_arch(spec.arch, family=spec.family).eval())
    img = read_image(Path(__file__).resolve().parents[1] / "examples" / "chelsea.jpg")
    g = np.random.default_rng(0)
    xy = g.uniform(0, 300, (64, 2))
    boxes = np.concatenate([xy, xy + g.uniform(40, 150, (64, 2))], 1)
    batches = [int(x) for x in a.decoder_batches.split(",")]
    off = AmgSettings(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    gens = {(n, f): AutomaticMaskGenerator(net, s, decoder_batch=n)
            for n in batches for f, s in (("default", AmgSettings()), ("off", off))}
    first = gens[batches[0], "default"]
    crop = first.prepare_crops(img)[0]
    feats = first.predictor.embed([crop.pixels], [crop.crop_hw])[0]
    pred = Predictor(net)
    pred.set_features(feats)
    from sam_cli import predictor as P

    factorable = factored.factorable

    def run(n: int, what: str, path: str) -> float:
        factored.factorable = factorable if path == "factored" else (lambda *_: False)
        feats.derived.clear()
        t = time.perf_counter()
        if what == "boxes":
            P.CPU_DECODER_BATCH = n
            pred.predict(boxes=boxes, multimask=False, low_res=False)
        else:
            gens[n, what].decode_crop(feats, crop, img.shape[:2])
        return time.perf_counter() - t

    paths = ("factored", "plain")
    rows = a.decoder_rows.split(",")
    best = {(n, w, p): float("inf") for n in batches for w in rows for p in paths}
    with torch.inference_mode():
        for _ in range(a.rounds):
            for key in best:
                best[key] = min(best[key], run(*key))
    factored.factorable = factorable
    name = Path(a.checkpoint).name if a.checkpoint else f"random {a.model}"
    print(f"# mask decoder, {name}, {a.threads} threads, chelsea.jpg: seconds, best of {a.rounds}")
    print("| two-way transformer | prompts per decoder call | automatic 32×32, default filters | filters off "
          "| 64 boxes |")
    print("|---|---:|---:|---:|---:|")
    for p in paths:
        for n in batches:
            cells = (f"{best[n, w, p]:.2f}" if w in rows else "–" for w in ("default", "off", "boxes"))
            print(f"| {p} | {n} | " + " | ".join(cells) + " |")

    # the image → token softmax over the T = 7 tokens, per layout of the logits (one call of
    # 16 prompts; transformer.Attention.image_to_tokens takes the first on the CPU)
    print("\n| image → token softmax layout, 16 prompts | ms |\n|---|---:|")
    for name, shape, dim in (("B×T×H×N, over T (sam on the CPU)", (16, 7, 8, 4096), 1),
                             ("B×N×T×H, over T (heads innermost)", (16, 4096, 7, 8), 2),
                             ("B×N×H×T, over the last dim (sam on GPUs)", (16, 4096, 8, 7), 3)):
        x = torch.randn(shape)
        torch.softmax(x, dim)
        t = time.perf_counter()
        for _ in range(10):
            torch.softmax(x, dim)
        print(f"| {name} | {(time.perf_counter() - t) * 100:.2f} |")


def ms_per_item(fn, n: int) -> float:
    """Milliseconds per item of fn() over n items: a warm-up call, then the best of 3."""
    fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3 / n


def compile_table(spec) -> None:
    """Seconds per call eager and compiled (best of 3 after the first call, which compiles),
    for the parts `Sam.compile_parts` compiles: the image encoder on one image, and the mask
    decoder (its transformer and upscaling) on 16 point prompts, as automatic mode calls it."""
    import os
    import tempfile

    from sam_cli.checkpoints import build_from_arch

    # Inductor keeps what it compiled on disk and a later run reuses it: time a first
    # compile, as on a new machine, unless told otherwise
    cache = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))
    torch.manual_seed(0)
    net = build_from_arch(spec.arch).eval()
    pe = net.prompt_encoder
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        emb = net.image_encoder(x)
        sparse, dense = pe(points=(torch.rand(16, 1, 2) * 1024, torch.ones(16, 1, dtype=torch.long)),
                           boxes=None, masks=None)
        dense_pe = pe.get_dense_pe()
        calls = {"image encoder, 1 image": lambda: net.image_encoder(x),
                 "mask decoder, 16 prompts": lambda: net.mask_decoder(emb, dense_pe, sparse, dense, True)}

        def best(fn) -> float:
            times = []
            for _ in range(3):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return min(times)

        eager = {name: best(fn) for name, fn in calls.items()}
        net.compile_parts()
        rows = []
        for name, fn in calls.items():
            t = time.perf_counter()
            fn()
            rows.append((name, eager[name], time.perf_counter() - t, best(fn)))
    print(f"# {spec.name}, {torch.get_num_threads()} threads: torch.compile (Inductor) against "
          f"eager, seconds; Inductor's cache: {cache}")
    print("| part | eager | compiling (first call) | compiled | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for name, e, first, c in rows:
        print(f"| {name} | {e:.3f} | {first:.1f} | {c:.3f} | {e / c:.2f}x |")


def writes_table() -> None:
    """Seconds per image for each output format, best of 3, each into a new folder."""
    import tempfile
    from pathlib import Path

    import cv2
    import numpy as np

    from sam_cli import masks as M
    from sam_cli.io import writers
    from sam_cli.io.formats.png import PNG_THREADS
    from sam_cli.io.outputs import OutputLayout

    from benchmark import photo_12mp, photo_regions, read, region_records

    def plain_png(folder: Path, recs) -> None:
        folder.mkdir()
        for i, r in enumerate(recs):
            mask = M.rle_to_mask(r.rle)
            (folder / f"{i}.png").write_bytes(writers.encode_png(mask.astype(np.uint8) * 255))

    def plain_label_map(folder: Path, recs, image) -> None:
        out = np.zeros(image.shape[:2], np.uint16)
        for i in sorted(range(len(recs)), key=lambda i: -recs[i].area):
            out[M.rle_to_mask(recs[i].rle)] = i + 1
        writers.atomic_write_bytes(folder / "x.labels.png", writers.encode_png(out))

    def plain_overlay(folder: Path, recs, image) -> None:
        masks = [M.rle_to_mask(r.rle) for r in recs]
        out = image.astype(np.float32)
        colours = writers.palette(len(masks))
        order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
        for i in order:
            out[masks[i]] = out[masks[i]] * 0.5 + colours[i] * 0.5
        out = out.astype(np.uint8)
        for i in order:
            contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in colours[i]), 1)
        writers.write_image(folder / "x.overlay.jpg", out)

    plain = {"png": lambda d, recs, img: plain_png(d / "masks", recs),
             "label-map": plain_label_map, "overlay": plain_overlay}
    print(f"# `sam auto` outputs of 60 masks per image, seconds, best of 3 "
          f"(sam encodes PNGs on {PNG_THREADS} threads)")
    print("| photo | format | whole-image way | sam | speed-up |")
    print("|---|---|---:|---:|---:|")
    for name, image in (("coffee.jpg", read("coffee.jpg")), ("coffee.jpg at 12 MP", photo_12mp())):
        h, w = image.shape[:2]
        recs = region_records(photo_regions(image, 60))
        with tempfile.TemporaryDirectory() as tmp:
            def best(fn) -> float:
                times = []
                for _ in range(3):
                    d = Path(tempfile.mkdtemp(dir=tmp))
                    t = time.perf_counter()
                    fn(d)
                    times.append(time.perf_counter() - t)
                return min(times)

            for fmt in ("png", "coco-rle", "label-map", "overlay"):
                ours = best(lambda d: OutputLayout(d, (fmt,)).write("x.jpg", image, recs))
                if fmt in plain:
                    base = best(lambda d: plain[fmt](d, recs, image))
                    print(f"| {name} ({w}×{h}) | {fmt} | {base:.3f} | {ours:.3f} | {base / ours:.1f}x |")
                else:
                    print(f"| {name} ({w}×{h}) | {fmt} | - | {ours:.3f} | - |")
    big = max((M.rle_to_mask(r.rle) for r in recs[:1]), key=np.sum).astype(np.uint8) * 255
    print("\n# one 12 MP mask (the largest region) as PNG, best of 5")
    print("| PNG row filter | ms | bytes |")
    print("|---|---:|---:|")
    for label, params in (("OpenCV's default", []), ("none (sam)", writers._MASK_PNG_PARAMS)):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            data = writers.encode_png(big, params)
            times.append(time.perf_counter() - t)
        print(f"| {label} | {min(times) * 1e3:.1f} | {len(data)} |")


def masks_table(tiles: list[int]) -> None:
    """Milliseconds per mask of the full-resolution steps of automatic mode on a 4000×3000
    photo (8 smooth masks at a time), each done sam's way and the plain way."""
    from torch.nn import functional as F

    from sam_cli import masks as M
    from sam_cli import upscale as U

    n = 8
    torch.manual_seed(0)
    low = F.interpolate(torch.randn(n, 1, 12, 16) * 10, size=(193, 256), mode="bilinear")[:, 0]
    frame = ((768, 1024), (3000, 4000), 1024)

    def dense(x: torch.Tensor) -> torch.Tensor:  # the same resize as one dense matmul per axis
        rh = U.axis_resize_matrix(256, 1024, 768, 3000)[:, :193]
        rw = U.axis_resize_matrix(256, 1024, 1024, 4000)
        return torch.matmul(rw, torch.matmul(rh, x).transpose(-1, -2)).transpose(-1, -2)

    logits = U.upscale_logits(low, *frame)
    binary = logits > 0
    rows = [
        ("resize 256² logits → 12 MP", lambda: U.upscale_logits(low, *frame), lambda: dense(low)),
        ("count a mask's pixels (stability)", lambda: M.count_true(binary),
         lambda: binary.sum(dim=(-1, -2), dtype=torch.int32)),
        ("rows and columns with pixels (boxes)", lambda: M.masks_to_boxes(binary),
         lambda: (binary.any(-1), binary.any(-2))),
    ]

    print(f"# 12 MP masks, {torch.get_num_threads()} threads: ms per mask")
    print("| step | sam | plain | |\n|---|---:|---:|---:|")
    for name, ours, plain in rows:
        a, b = ms_per_item(ours, n), ms_per_item(plain, n)
        print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.1f}x |")
    tiled_table(tiles)


def tiled_table(tiles: list[int]) -> None:
    """Automatic mode's whole full-resolution step (stability, threshold, boxes, RLE) per mask on
    a 4000×3000 photo: every pixel upscaled (the dense path) against TiledMasks, for smooth
    masks with more and more boundary, and noise (a random model's masks)."""
    from torch.nn import functional as F

    from sam_cli import masks as M
    from sam_cli import upscale as U
    from sam_cli.automatic.tiled import TiledMasks

    n, frame = 16, ((768, 1024), (3000, 4000), 1024)

    def dense(low: torch.Tensor) -> None:
        logits = U.upscale_logits(low, *frame)
        M.stability_score(logits, 0.0, 1.0)
        binary = logits > 0.0
        M.masks_to_boxes(binary)
        M.masks_to_run_edges(binary)

    def tiled(low: torch.Tensor, tile: int) -> float:
        tm = TiledMasks(low, *frame, 0.0, 1.0, tile=tile)
        _ = tm.stability, tm.boxes  # each property computes
        tm.run_edges(torch.arange(n))
        return tm.undecided

    g = torch.Generator().manual_seed(0)
    # blobs: a smooth field of c×(4c/3) bumps; "crisp" edges rise from −20 to +20 within a few
    # low-res pixels, as a trained SAM's logits do at object boundaries, "soft" ones over ~100
    kinds = [(f"{edge}, {c}×{c * 4 // 3} blobs", (c, c * 4 // 3), edge)
             for edge in ("crisp", "soft") for c in (3, 6, 12, 24)]
    kinds.append(("noise (a random model's masks)", None, None))
    print(f"\n# automatic mode's full-resolution step, 12 MP, {n} masks at a time, "
          f"{torch.get_num_threads()} threads: ms per mask")
    head = " | ".join(f"tiles of {t}: share upscaled | ms" for t in tiles)
    print(f"| masks | every pixel, ms | {head} |")
    print("|---|---:|" + "---:|---:|" * len(tiles))
    for name, blobs, edge in kinds:
        if blobs is None:
            low = torch.randn(n, 193, 256, generator=g) * 30
        else:
            base = torch.randn(n, 1, *blobs, generator=g)
            low = F.interpolate(base, size=(193, 256), mode="bicubic", align_corners=False)[:, 0]
            low = 20 * torch.tanh(8 * low) if edge == "crisp" else 10 * low
        cells = [f"{ms_per_item(lambda: dense(low), n):.1f}"]
        for t in tiles:
            share = tiled(low, t)
            cells += [f"{share:.3f}", f"{ms_per_item(lambda: tiled(low, t), n):.1f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
