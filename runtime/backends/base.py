"""The one interface every backend implements: run a named graph of the pack on NumPy arrays."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")  # every backend's; which it runs: supported_precisions


class Backend(ABC):
    """Runs the pack's graphs by name. `name` is what outputs report (e.g. "cpu")."""

    name: str = "?"
    # Set by `--backend auto`: each better backend it did not take, and why.
    passed_over: dict[str, str] | None = None

    @abstractmethod
    def run(self, graph: str, inputs: dict[str, np.ndarray], *,
            release: bool = False) -> list[np.ndarray]:
        """Run `graph` once on `inputs` (input name → array); outputs in the graph's order.

        `release`: this call ends a batch of work on `graph`, so the backend gives back the
        working memory it kept for the next call (ONNX Runtime's arena keeps a call's peak
        otherwise). Callers pass it on a once-per-image call and on the last of a loop."""

    def prepare(self, graph: str) -> None:  # noqa: B027 - optional hook, no-op by default
        """Load `graph` now, so load errors surface at start-up and the first query is not slow."""

    def max_batch(self, graph: str) -> int | None:
        """Largest batch one call of `graph` accepts; None when unbounded."""
        return None

    def describe(self) -> dict[str, object]:
        """What really runs (providers, devices, precision), for `--json` and `doctor`."""
        report: dict[str, object] = {"backend": self.name, **self.details()}
        if self.passed_over is not None:
            report["passed_over"] = self.passed_over
        return report

    def details(self) -> dict[str, object]:
        """What `describe` reports beyond the name."""
        return {}

    def run_batched(self, graph: str, inputs: dict[str, np.ndarray],
                    batched: tuple[str, ...], *, release: bool = False) -> list[np.ndarray]:
        """Run `graph` over the leading axis of the `batched` inputs, in chunks no larger than
        `max_batch(graph)` (one call when the backend has no limit); outputs concatenated;
        `release` as in `run`, on the last chunk."""
        return run_in_chunks(partial(self.run, graph), inputs, batched, self.max_batch(graph),
                             release=release)


def run_in_chunks(run: Callable[..., list[np.ndarray]], inputs: dict[str, np.ndarray],
                  batched: Sequence[str], limit: int | None, *,
                  release: bool = False) -> list[np.ndarray]:
    """`run(inputs, release=...)` over the leading axis of the `batched` inputs in chunks of at
    most `limit` rows (one call when there is no limit or no batched input); the other inputs go
    whole to every chunk, and so does a batched input of one row when others have more (it is
    broadcast by the graph: one image's tokens under K masks); `release` reaches the last chunk
    only; outputs concatenated."""
    total = max((inputs[name].shape[0] for name in batched), default=0)
    if limit is None or total <= limit:
        return run(inputs, release=release)
    parts = []
    for start in range(0, total, limit):
        chunk = dict(inputs)
        for name in batched:
            if inputs[name].shape[0] == total:
                chunk[name] = inputs[name][start:start + limit]
        parts.append(run(chunk, release=release and start + limit >= total))
    return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]
