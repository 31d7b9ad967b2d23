"""Automatic ("everything") mask generation: grids, crops, batches, filters, NMS, cleanup."""

from .generator import AmgSettings, AutomaticMaskGenerator, MaskRecord

__all__ = ["AmgSettings", "AutomaticMaskGenerator", "MaskRecord"]
