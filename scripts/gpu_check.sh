#!/usr/bin/env bash
# Everything that needs a GPU, in one call (made for the `device` tool: under 10 minutes on an
# H100/H200). Needs the wheels the GPU image lacks in .whl/ (pycocotools, segment-anything):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl pycocotools==2.0.11 segment-anything==1.0
# With the device tool: carry .whl, timeout_s 580 (the stages below share 560 s and stop themselves).
# Usage: bash scripts/gpu_check.sh [quick|full|peers] [OUTDIR]
#   quick: GPU tests + scripts/gpu_profile.py (about 3 minutes)
#   peers: only scripts/peers_bench.py for vit_h (peers.md, peers.json): sam beside the reference,
#          Ultralytics and transformers (the image's own transformers). Ultralytics travels as
#          wheels too: add ultralytics==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99
#          to the download above (--python-version 3.12; they are pure Python)
#   full:  GPU tests, then scripts/benchmark.py against the reference (vit_h, bf16):
#          bench.md   confident weights: encoder, 64 boxes, default filters, folder, resize
#          bench_coherent.md  region masks: every candidate kept (the bf16 vs fp32 agreement
#                     over 3072 masks), and the folder under `sam auto --compile`
#          then the profile (quick mode: only this after the tests), and if time is left
#          precision.md  ours in fp32 against the reference, every candidate kept: how far
#                     fp32 on this GPU alone moves the masks; then scripts/bf16_drift.py:
#                     which part in bf16 moves them, and (--encoder-only) the embedding and
#                     what the fp32 residual stream costs the encoder
#          writes.md  the host writing 60 masks per image in each output format
# Results in OUTDIR (11 files): gpu.txt, gpu_tests.log, bench.md/.json, bench_coherent.md/.json,
# sam2.md, sam3.md, precision.md, profile.txt, writes.md
set -uo pipefail
MODE=${1:-full}
OUTDIR=${2:-${OUT:-/tmp/sam-gpu}}
BUDGET=560
mkdir -p "$OUTDIR"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
# seconds a stage may take: at most $1, and never past the budget
left() { local l=$((BUDGET - SECONDS)); [ "$l" -gt "$1" ] && l=$1; echo "$l"; }
stage() {  # stage CAP NAME COMMAND...: runs it if at least 30 s are left
    local cap=$1 name=$2; shift 2
    local t; t=$(left "$cap")
    if [ "$t" -lt 30 ]; then echo "# $name: not run, ${t} s left"; return; fi
    echo "# $name (at most ${t} s, started at ${SECONDS} s)"
    timeout "$t" "$@"
}
BENCH=(python3 scripts/benchmark.py --device cuda --model vit_h --dtype bf16 --folder-images 20 --repeat 2)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
if [ "$MODE" = peers ]; then  # every row but the folder's twenty photos, which ten stand for here
    stage 540 "peers, vit_h" python3 scripts/peers_bench.py --device cuda --model vit_h --folder-images 10 \
        --json "$OUTDIR/peers.json" 2>&1 | tee "$OUTDIR/peers.md"
    exit 0
fi
python3 -c "import torch, typer, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'typer', typer.__version__)" | tee -a "$OUTDIR/gpu.txt"
stage 150 tests python3 -m pytest -q -s -m gpu tests/test_gpu.py -p no:cacheprovider > "$OUTDIR/gpu_tests.log" 2>&1
tail -30 "$OUTDIR/gpu_tests.log"
# the benchmark's confident weights where it ran (default filters then keep masks), else random
CKPT=()
if [ "$MODE" = full ]; then
    stage 170 "benchmark, confident weights" "${BENCH[@]}" --rows encoder,boxes,auto-default,folder,resize-12mp \
        --json "$OUTDIR/bench.json" --save-checkpoint /tmp/sam-bench-vit_h.pth 2>&1 | tee "$OUTDIR/bench.md"
    stage 200 "benchmark, coherent weights, folder compiled" "${BENCH[@]}" --weights coherent --compile \
        --rows auto-all,folder --json "$OUTDIR/bench_coherent.json" \
        --save-checkpoint /tmp/sam-coherent-vit_h.pth 2>&1 | tee "$OUTDIR/bench_coherent.md"
    [ -f /tmp/sam-bench-vit_h.pth ] && CKPT=(--checkpoint /tmp/sam-bench-vit_h.pth)
fi
# SAM 2.1's largest beside vit_h (and beside Meta's sam2 where it is installed: add its sdist and
# hydra-core, omegaconf, antlr4-python3-runtime, iopath, portalocker to .whl)
[ "$MODE" = full ] && stage 110 "SAM 2.1 beside vit_h" python3 scripts/sam2_bench.py --device cuda \
    --models sam2.1_hiera_large,vit_h --rows encoder,boxes,auto --repeat 2 2>&1 | tee "$OUTDIR/sam2.md"
# SAM 3's text prompts at full size beside transformers' Sam3Model (the image's own transformers,
# where it has Sam3Model; Ultralytics where its wheels travel too)
[ "$MODE" = full ] && stage 90 "SAM 3 text prompts" python3 scripts/sam3_bench.py --device cuda --photos 2 \
    2>&1 | tee "$OUTDIR/sam3.md"
# the profile (with each generate() step's host time) before the precision checks: it says
# where one image's time goes
stage 100 profile python3 scripts/gpu_profile.py --model vit_h ${CKPT[@]+"${CKPT[@]}"} 2>&1 | tee "$OUTDIR/profile.txt"
if [ "$MODE" = full ]; then
    stage 90 "benchmark, coherent weights, ours in fp32" python3 scripts/benchmark.py --device cuda --model vit_h \
        --dtype fp32 --weights coherent --rows auto-all --repeat 1 2>&1 | tee "$OUTDIR/precision.md"
    [ -f /tmp/sam-coherent-vit_h.pth ] && stage 60 "bf16 drift by part" python3 scripts/bf16_drift.py \
        --device cuda --checkpoint /tmp/sam-coherent-vit_h.pth 2>&1 | tee -a "$OUTDIR/precision.md"
    [ -f /tmp/sam-coherent-vit_h.pth ] && stage 45 "bf16 drift of the embedding" python3 scripts/bf16_drift.py \
        --device cuda --checkpoint /tmp/sam-coherent-vit_h.pth --encoder-only --repeat 5 2>&1 | tee -a "$OUTDIR/precision.md"
    # the host's side of a folder run: how fast this machine writes 60 masks per image, per
    # format (PNGs on up to 8 threads), against the GPU's time per image above
    stage 45 "output writing on this host" python3 scripts/cpu_profile.py --writes 2>&1 | tee "$OUTDIR/writes.md"
fi
