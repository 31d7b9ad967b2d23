"""Automatic ("everything") mask generation: grids, crops, batches, filters, NMS, cleanup."""

from ..masks import MaskRecord
from .generator import AmgSettings, AutomaticMaskGenerator

__all__ = ["AmgSettings", "AutomaticMaskGenerator", "MaskRecord"]
