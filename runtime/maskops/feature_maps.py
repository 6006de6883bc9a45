"""The ResNet family's masked feature maps (SPEC.md §7): the layer-4 map L2-normalised over
channels at each position, times each mask's g×g grid, ready for CLIP's attention pool.

The norm is floored at 1e-12 (as `F.normalize`), so a zero feature vector gives zeros, not NaN.
Squares are summed channel after channel in float32, the order the C++ op uses.
"""

from __future__ import annotations

import numpy as np


def masked_feature_maps(features: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """C×g×g float32 map, K×g×g float32 grids → K×C×g×g float32."""
    norm = np.zeros(features.shape[1:], dtype=np.float32)
    for channel in features:
        norm += channel * channel
    unit = features / np.maximum(np.sqrt(norm), np.float32(1e-12))
    return unit[None] * grids[:, None]
