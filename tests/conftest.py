from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from reference import TINY, build_reference, save_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_reference():
    return build_reference(**TINY, seed=0)


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_reference, tmp_path_factory) -> Path:
    return save_checkpoint(tiny_reference, tmp_path_factory.mktemp("ckpt") / "tiny.pth")


@pytest.fixture(scope="session")
def coherent_ckpt(tmp_path_factory) -> Path:
    """The tiny reference with region masks (reference.make_coherent), as a trained model's
    are: masks of the example photos with several parts and holes, not pixel noise."""
    from reference import make_coherent

    return save_checkpoint(make_coherent(build_reference(**TINY, seed=0)),
                           tmp_path_factory.mktemp("coherent") / "coherent.pth")


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    from sam_cli.checkpoints import load_model

    return load_model(checkpoint=tiny_ckpt)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    from sam_cli.io.images import read_image

    return read_image(EXAMPLES / "chelsea.jpg")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache or the network by accident."""
    monkeypatch.setenv("SAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAM_BASE_URL", "http://127.0.0.1:9/")
    for var in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX", "SAM_SHARD_COUNT"):
        monkeypatch.delenv(var, raising=False)  # a CI job inside an array job still runs whole
