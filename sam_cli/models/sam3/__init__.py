"""SAM 3 (Meta, 2025): concept segmentation from text and exemplar prompts. Written here part by
part, each against Meta's own modules (tests/test_sam3_parts.py); the family (family.py) puts
it behind the seam, and text_prompts.py runs it over many images.

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
                   post-processing (matches Meta's Sam3Image and Sam3Processor end to end)
    checkpoint.py  sam3.pt's `detector.` and `tracker.` keys split, the architecture read back
                   from shapes
    family.py      FAMILY and Sam3, the network the engines load: the ViT's output as the
                   cached features, the pyramid made from it

Still to write: prompt files' "text", and the interactive point/box head
(the `tracker.` keys, left out by name until then).
"""
