"""Spatial words in referring expressions (issue 18): parsing them (`parse`)."""

from .parse import Ordinal, Position, Relation, Size, SpatialParse, parse_spatial

__all__ = ["Ordinal", "Position", "Relation", "Size", "SpatialParse", "parse_spatial"]
