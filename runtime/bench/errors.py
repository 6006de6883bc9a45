"""The benchmark's one error type: a bad option or a failed step, told in one line."""

from __future__ import annotations

from ..errors import ZsrisError


class BenchError(ZsrisError):
    """A benchmark cannot go on; the command prints it in one line and exits 2."""
