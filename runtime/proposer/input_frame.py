"""Where the image sits inside the proposer's S×S input, and the maps between the two frames.

SAM scales the longest side to S and pads bottom-right; SAM 2 squashes the image to S×S. Points go
into the input frame; low-resolution logits come back out of it. The way back is linear (bilinear
to S×S, crop the image's part, bilinear to H×W), so each axis collapses into one small matrix and
a mask is upsampled by two matrix products instead of two full-size resizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bilinear import source_taps
from ..image import normalise
from ..pack import ProposerSettings
from .antialias import resize_antialiased


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """out×in matrix of PyTorch's bilinear resize (half-pixel centres, no antialiasing)."""
    lo, hi, weight = source_taps(in_size, out_size)
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lo), 1 - weight)
    np.add.at(matrix, (rows, hi), weight)
    return matrix


@dataclass(frozen=True)
class InputFrame:
    image_size: tuple[int, int]  # (H, W) of the original image
    resized: tuple[int, int]  # (h, w) of the image inside the input
    input_size: int  # S
    padded: bool  # SAM's longest-side resize and padding; False: SAM 2's square resize

    @classmethod
    def for_image(cls, settings: ProposerSettings, height: int, width: int) -> InputFrame:
        s = settings.input_size
        if settings.resize == "square":
            return cls((height, width), (s, s), s, padded=False)
        scale = s / max(height, width)
        # segment-anything's ResizeLongestSide.get_preprocess_shape, rounding included.
        # (at least one pixel: a 10000×1 image would round its short side to nothing)
        resized = (max(int(height * scale + 0.5), 1), max(int(width * scale + 0.5), 1))
        return cls((height, width), resized, s, padded=True)

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """Points (x, y) in image pixels → pixels of the S×S input frame, rounded as each
        official predictor rounds them (SAM in float64, SAM 2 in float32)."""
        (h0, w0), (h1, w1) = self.image_size, self.resized
        if not self.padded:
            unit = points.astype(np.float32) / np.array([w0, h0], dtype=np.float32)
            return unit * np.float32(self.input_size)
        return (points * np.array([w1 / w0, h1 / h0])).astype(np.float32)

    def logit_maps(self, low_res: int) -> tuple[np.ndarray, np.ndarray]:
        """(A_y H×l, A_x W×l): image-size logits = A_y · L · A_xᵀ for l×l logits L."""
        if not self.padded:  # SAM 2: one resize, low-res → image
            return (bilinear_matrix(low_res, self.image_size[0]),
                    bilinear_matrix(low_res, self.image_size[1]))
        # SAM: low-res → S×S input, crop the image's part, → image (Sam.postprocess_masks).
        to_input = bilinear_matrix(low_res, self.input_size)
        maps = [bilinear_matrix(inner, out) @ to_input[:inner]
                for out, inner in zip(self.image_size, self.resized, strict=True)]
        return maps[0], maps[1]


def prepare_input(rgb: np.ndarray, settings: ProposerSettings) -> tuple[np.ndarray, InputFrame]:
    """RGB uint8 H×W×3 → the encoder's 1×3×S×S float32 input, and its frame.

    Normalised first, resized second (both are linear, so the order only moves rounding), with
    PyTorch's antialiased filter so that large photos do not alias on the way down.
    """
    frame = InputFrame.for_image(settings, rgb.shape[0], rgb.shape[1])
    x = normalise(rgb, settings.mean, settings.std)
    if frame.resized != frame.image_size:
        x = resize_antialiased(x, frame.resized, settings.resize_filter)
    s = settings.input_size
    padded = np.zeros((1, 3, s, s), dtype=np.float32)
    padded[0, :, :frame.resized[0], :frame.resized[1]] = x
    return padded, frame
