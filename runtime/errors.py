"""Errors a caller can act on: each carries a one-line message fit for a terminal."""


class ZsrisError(Exception):
    """Base of every error caused by input (image, masks, text, pack) rather than by a bug."""


class ImageError(ZsrisError):
    """The image is missing, unreadable or of an unusable shape."""


class MaskError(ZsrisError):
    """The proposal masks are missing, empty or do not fit the image."""


class TextError(ZsrisError):
    """The expression is empty or cannot be parsed."""


class PackError(ZsrisError):
    """The model pack is missing a file, altered, or of an unknown schema."""


class NoMaskError(ZsrisError):
    """The proposer kept no mask for this image under the thresholds in force."""
