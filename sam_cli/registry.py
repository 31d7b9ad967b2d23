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
class Sam2Arch:
    """SAM 2's architecture: its Hiera trunk (the prompt encoder and decoder are the same for
    all four sizes). Heads, global blocks and windows are not in a checkpoint's shapes: they
    come from the known configs (SAM2_CONFIGS) by the trunk's width and stages."""

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_blocks: tuple[int, ...]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    pos_bkg: tuple[int, int] = (7, 7)
    img_size: int = 1024


#: Meta's four SAM 2 / 2.1 trunks (configs sam2.1_hiera_{t,s,b+,l}.yaml), by (width, stages)
SAM2_CONFIGS: dict[tuple[int, tuple[int, ...]], Sam2Arch] = {
    (a.embed_dim, a.stages): a
    for a in (
        Sam2Arch(96, 1, (1, 2, 7, 2), (5, 7, 9)),
        Sam2Arch(96, 1, (1, 2, 11, 2), (7, 10, 13)),
        Sam2Arch(112, 2, (2, 3, 16, 3), (12, 16, 20), pos_bkg=(14, 14)),
        Sam2Arch(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8)),
    )
}


@dataclass(frozen=True)
class WeightsSpec:
    file_name: str
    size: int
    sha256: str
    base_url: str = ""  # where Meta publishes it ("" : DEFAULT_BASE_URL)
    #: a gated Hugging Face repository serving it (its resolve URL, HF_TOKEN sent), when Meta
    #: publishes it there only; size 0 and sha256 "" then: Meta publishes neither, and the
    #: hub's own record of the file (its LFS sha256 and size) is what the download is checked
    #: against
    hub: str = ""


@dataclass(frozen=True)
class ModelType:
    name: str
    family: str  # models.FAMILY_MODULES key: the module that builds and runs it
    arch: object  # the family's architecture dataclass (SAM 1: ArchSpec)
    weights: WeightsSpec
    params_m: float
    gflop: int


DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM2_1_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
SAM2_0_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
DEFAULT_MODEL = "vit_b"
#: the model `sam segment --text` uses when none is named (the one family with text prompts)
DEFAULT_TEXT_MODEL = "sam3"

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
        # SAM 2.1 and SAM 2.0 (the same image path; sha256: the files' Git-LFS ids on Meta's
        # Hugging Face mirrors, as ../shared/SAM2-SAM3.md §A2 lists them)
        *(ModelType(f"sam2.1_hiera_{size}", "sam2", SAM2_CONFIGS[key], WeightsSpec(f"sam2.1_hiera_{size}.pt", n, h,
                                                                              SAM2_1_URL), p, 0)
          for size, key, n, h, p in (
              ("tiny", (96, (1, 2, 7, 2)), 156_008_466,
               "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 38.9),
              ("small", (96, (1, 2, 11, 2)), 184_416_285,
               "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 46.0),
              ("base_plus", (112, (2, 3, 16, 3)), 323_606_802,
               "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 80.8),
              ("large", (144, (2, 6, 36, 4)), 898_083_611,
               "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 224.4))),
        *(ModelType(f"sam2_hiera_{size}", "sam2", SAM2_CONFIGS[key], WeightsSpec(f"sam2_hiera_{size}.pt", n, h,
                                                                            SAM2_0_URL), p, 0)
          for size, key, n, h, p in (
              ("tiny", (96, (1, 2, 7, 2)), 155_906_050,
               "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125", 38.9),
              ("small", (96, (1, 2, 11, 2)), 184_309_650,
               "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3", 46.0),
              ("base_plus", (112, (2, 3, 16, 3)), 323_493_298,
               "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071", 80.8),
              ("large", (144, (2, 6, 36, 4)), 897_952_466,
               "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b", 224.4))),
        # SAM 3 (its architecture read back from the file's shapes: models/sam3/checkpoint.py);
        # gated on the hub, where it is the only copy Meta publishes
        ModelType("sam3", "sam3", None, WeightsSpec("sam3.pt", 0, "", hub="facebook/sam3"), 848.0, 0),
    )
}
