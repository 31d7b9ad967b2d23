"""Model types and their weights: one typed table, each entry naming its family
(models/__init__.py). No torch here: `sam --help` and TAB completion read this table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    """SAM 1's architecture: its ViT image encoder (SAM 1's prompt encoder and decoder are
    the same for vit_b, vit_l and vit_h)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256


@dataclass(frozen=True)
class WeightsSpec:
    file_name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelType:
    name: str
    family: str  # models.FAMILY_MODULES key: the module that builds and runs it
    arch: object  # the family's architecture dataclass (SAM 1: ArchSpec)
    weights: WeightsSpec
    params_m: float
    gflop: int


DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
DEFAULT_MODEL = "vit_b"

#: Precisions of the heavy parts (fp16 is not offered: it breaks vit_h).
DTYPES = ("fp32", "bf16")
#: Device kinds `--device` takes; `cuda` may carry an index (cuda:1).
DEVICES = ("auto", "cpu", "cuda", "mps")

MODELS: dict[str, ModelType] = {
    m.name: m
    for m in (
        ModelType(
            "vit_b", "sam1",
            ArchSpec(768, 12, 12, (2, 5, 8, 11)),
            WeightsSpec(
                "sam_vit_b_01ec64.pth", 375_042_383,
                "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            ),
            93.7, 972,
        ),
        ModelType(
            "vit_l", "sam1",
            ArchSpec(1024, 24, 16, (5, 11, 17, 23)),
            WeightsSpec(
                "sam_vit_l_0b3195.pth", 1_249_524_607,
                "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            ),
            312.0, 2986,
        ),
        ModelType(
            "vit_h", "sam1",
            ArchSpec(1280, 32, 16, (7, 15, 23, 31)),
            WeightsSpec(
                "sam_vit_h_4b8939.pth", 2_564_550_879,
                "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            ),
            641.0, 5961,
        ),
    )
}
