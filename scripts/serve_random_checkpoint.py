"""Serve a random-weight SAM checkpoint on 127.0.0.1, as a stand-in for Meta's download
server where the real weights cannot be fetched (air-gapped machines, CI, this repository's
README demo). Prints the environment variables that point `sam` at it.

    python scripts/serve_random_checkpoint.py --model vit_b --port 8765 &
    export SAM_BASE_URL=http://127.0.0.1:8765/ SAM_SHA256_VIT_B=<printed hash>

The weights come from sam's own model builder with a fixed seed: the masks are noise, but
every code path (download, hash check, cache, loading, inference) is the real one.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import signal
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import mkdtemp

import torch


def main() -> None:
    from sam_cli.registry import MODELS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit_b", choices=list(MODELS))
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from sam_cli.checkpoints import build_from_arch
    from sam_cli.fetch import sha_variable

    spec = MODELS[args.model]
    torch.manual_seed(args.seed)
    if spec.family == "sam3":  # its architecture is read from the file: Meta's full-size one
        from sam_cli.models.sam3.model import Sam3Arch

        net = build_from_arch(Sam3Arch(), family="sam3")
        with torch.no_grad():  # Meta's modules leave some tensors uninitialised
            for p in net.parameters():
                p.normal_(0, 0.02)
    else:
        net = build_from_arch(spec.arch, family=spec.family)
    buf = io.BytesIO()  # in the upstream layout: SAM 2's and 3's files hold the weights under "model"
    torch.save(net.state_dict() if spec.family == "sam1" else {"model": net.state_dict()}, buf)
    data = buf.getvalue()
    root = Path(mkdtemp(prefix="sam-mirror-"))
    (root / spec.weights.file_name).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    server = ThreadingHTTPServer(
        ("127.0.0.1", args.port), partial(SimpleHTTPRequestHandler, directory=str(root))
    )
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    # its own cache folder too: the random weights never enter the user's cache
    print(f"export SAM_BASE_URL={url} {sha_variable(spec)}={digest} "
          f"SAM_CACHE_DIR={root / 'cache'}", flush=True)
    print(f"serving {spec.weights.file_name} ({len(data):,} bytes) from {root}", file=sys.stderr, flush=True)
    # the folder holds a full-size checkpoint: gone when the server is stopped (Ctrl-C or kill)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
