"""zsris-rt: zero-shot referring image segmentation (Global-Local CLIP) without PyTorch."""

from .errors import ImageError, MaskError, PackError, TextError, ZsrisError
from .pack import ClipSettings, Pack, load_pack
from .results import Result, Scene
from .segmenter import Segmenter

__version__ = "0.1.0"

__all__ = [
    "ClipSettings",
    "ImageError",
    "MaskError",
    "Pack",
    "PackError",
    "Result",
    "Scene",
    "Segmenter",
    "TextError",
    "ZsrisError",
    "load_pack",
]
