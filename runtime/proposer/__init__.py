"""The mask proposer ("segment everything"): segment-anything's automatic mask generator on the
pack's encoder and decoder graphs (generator.py), its proposer modes (modes.py), and the helpers
only it needs: the input frame (input_frame.py, antialias.py) and box NMS (box_nms.py)."""

from .generator import ImageEmbedding, Proposer, generator_options, point_grid
from .modes import MODES, ProposerMode, proposer_mode

__all__ = ["MODES", "ImageEmbedding", "Proposer", "ProposerMode", "generator_options",
           "point_grid", "proposer_mode"]
