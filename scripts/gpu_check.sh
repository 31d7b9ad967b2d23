#!/usr/bin/env bash
# Everything that needs a GPU, in one call (made for the `device` tool: under 10 minutes on an
# H100/H200). Needs the wheels the GPU image lacks in .whl/ (pycocotools, segment-anything):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl pycocotools==2.0.11 segment-anything==1.0
# With the device tool: carry .whl, timeout_s 580 (the stages below stop themselves by 550 s).
# Usage: bash scripts/gpu_check.sh [quick|full] [OUTDIR]
#   quick: GPU tests + scripts/gpu_profile.py (about 3 minutes)
#   full:  the same, with scripts/benchmark.py against the reference between them (9 minutes at most)
# Results in OUTDIR: gpu.txt, gpu_tests.log, profile.txt, bench.md, bench.json
set -uo pipefail
MODE=${1:-full}
OUTDIR=${2:-${OUT:-/tmp/sam-gpu}}
mkdir -p "$OUTDIR"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
python3 -c "import torch, typer, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'typer', typer.__version__)" | tee -a "$OUTDIR/gpu.txt"
timeout 150 python3 -m pytest -q -s -m gpu tests/test_gpu.py -p no:cacheprovider > "$OUTDIR/gpu_tests.log" 2>&1
tail -30 "$OUTDIR/gpu_tests.log"
if [ "$MODE" = full ]; then
    timeout 280 python3 scripts/benchmark.py --device cuda --model vit_h --dtype bf16 \
        --rows encoder,boxes,auto-nofilter,auto-default,folder,resize-12mp,auto-all --folder-images 20 --repeat 3 \
        --json "$OUTDIR/bench.json" --save-checkpoint /tmp/sam-bench-vit_h.pth 2>&1 | tee "$OUTDIR/bench.md"
fi
# the benchmark's confident weights where it ran (default filters then keep masks), else random
CKPT=()
[ -f /tmp/sam-bench-vit_h.pth ] && CKPT=(--checkpoint /tmp/sam-bench-vit_h.pth)
timeout 120 python3 scripts/gpu_profile.py --model vit_h ${CKPT[@]+"${CKPT[@]}"} --compile 2>&1 | tee "$OUTDIR/profile.txt"
