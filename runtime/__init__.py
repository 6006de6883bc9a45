"""zsris-rt: zero-shot referring image segmentation (Global-Local CLIP) without PyTorch."""

from .errors import ImageError, MaskError, PackError, TextError, ZsrisError
from .pack import ClipSettings, Pack, load_pack
from .results import Result, Scene
from .segmenter import Segmenter


def _installed_version() -> str:
    """pyproject.toml's version, as installed; a bare source tree has none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zsris-rt")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _installed_version()

__all__ = [
    "__version__",
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
