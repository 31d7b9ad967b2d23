"""The Segment Anything network, written for `sam`; key names follow Meta's checkpoints."""

from .sam import Sam, build_sam

__all__ = ["Sam", "build_sam"]
