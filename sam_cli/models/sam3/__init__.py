"""SAM 3 (Meta, 2025): concept segmentation from text and exemplar prompts. Being written here
part by part; not a family of the registry yet (models.FAMILY_MODULES), so no checkpoint is
recognised as SAM 3 and no command takes it.

Written so far, each against Meta's own modules (tests/test_sam3_parts.py):

    tokenizer.py   the CLIP byte-pair tokenizer (vocabulary shipped, sha256 checked)
    text.py        the text encoder: a causal transformer, every token's features resized
    vit.py         the image encoder: ViT with 2-D rotary positions, windowed and global
                   attention, and its feature pyramid (the interactive head's second one too)
    fusion.py      the fusion encoder (image tokens attend to the prompt), sine positions
    decoder.py     the DETR decoder (presence token, box refinement, box relative-position
                   bias), the dot-product scoring and the segmentation head (pixel decoder,
                   each query's mask at the finest level)
    geometry.py    the geometry encoder: exemplar boxes and points as prompt tokens (RoIAlign
                   in torch alone), the CLS token a text prompt carries alone
    model.py       the detector assembled under Meta's checkpoint names, its preprocessing and
                   post-processing (matches Meta's Sam3Image and Sam3Processor end to end), and
                   TextPredictor: an image encoded once, its phrases decoded together
    checkpoint.py  sam3.pt's `detector.` and `tracker.` keys split, the architecture read back
                   from shapes, load_detector

Still to write: the family and registry entry (download with HF_TOKEN), `sam segment --text`
and `--exemplar`, `sam eval --text`, and the interactive point/box head.
"""
