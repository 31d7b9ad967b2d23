"""Output formats of `sam auto` (no heavy imports: the CLI reads this for --help)."""

FORMATS = ("png", "coco-rle", "coco", "label-map", "overlay")
