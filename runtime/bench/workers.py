"""Each measurement in a fresh Python process of its own, so its peak RSS and the modules it
imported are that measurement's alone (the runtime's must never hold torch).

A worker is `MODE → "module:function"`; the function takes the spec dict and returns a JSON
dict. `python -m zsris_rt.bench.workers MODE SPEC` serves the package's own workers; a script
can serve its own through `argument_parser` and `worker_main`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ZsrisError
from .errors import BenchError
from .stats import Json

Worker = Callable[[Json], Json]

# The package's workers, imported only in the subprocess that runs them; those needing torch are
# on the export side.
TORCH_WORKERS = "zsris_rt.export.bench_workers"
WORKERS: dict[str, str] = {
    "export": f"{TORCH_WORKERS}:export_random_pack",
    "workload": ".scene:write_workload",
    "matmul": ".flops:matmul_rate",
    "flops": ".flops:count_pack_flops",
    "runtime_clip": ".runtime_side:clip_runs",
    "runtime_proposer": ".runtime_side:proposer_runs",
    "runtime_main_job": ".runtime_side:main_job_runs",
    "quantize": ".runtime_side:quantize",
    "reference_clip": f"{TORCH_WORKERS}:clip_runs",
    "reference_proposer": f"{TORCH_WORKERS}:proposer_runs",
}
PACKAGE_COMMAND = (sys.executable, "-m", "zsris_rt.bench.workers")


def resolve(target: str) -> Worker:
    module, function = target.split(":")
    return getattr(importlib.import_module(module, __package__), function)


def argument_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A benchmark script's parser, with the hidden `--worker MODE SPEC` that spawn_worker passes
    and worker_main serves."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    return parser


def worker_main(workers: dict[str, Worker], mode: str, spec_path: str) -> int:
    """Entry of a worker subprocess: read the spec, run, write the result JSON."""
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = workers[mode](spec)
    except ZsrisError as exc:  # bad input (a backend that cannot run here, ...): one line
        print(f"zsris-rt bench, {mode}: {exc}", file=sys.stderr)
        return 2
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


def worker_env(threads: int, runs: Path) -> dict[str, str]:
    """The environment for workers: every BLAS/OpenMP pool limited to `threads`; the runs folder
    in ZSRIS_BENCH_RUNS for the files a worker writes besides its result."""
    env = dict(os.environ, ZSRIS_BENCH_RUNS=str(runs))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def spawn_worker(command: Sequence[str], mode: str, spec: Json, tag: str, work: str | Path,
                 threads: int) -> Json:
    """Run `command --worker`-style (`command MODE SPEC` for the package, `script --worker MODE
    SPEC` for a script) in a fresh process and return its result; files are named by `tag`."""
    folder = Path(work) / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    spec = dict(spec, result=str(folder / f"{tag}.result.json"))
    spec_path = folder / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([*command, mode, str(spec_path)], env=worker_env(threads, folder),
                          stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BenchError(f"worker {tag} failed (exit {proc.returncode}; its messages are above)")
    result = json.loads(Path(spec["result"]).read_text())
    result["process_wall_s"] = time.perf_counter() - start
    return result


def script_command(script: str) -> tuple[str, ...]:
    """The command that runs a benchmark script's own workers."""
    return sys.executable, str(Path(script).resolve()), "--worker"


if __name__ == "__main__":
    MODE, SPEC = sys.argv[1:3]
    sys.exit(worker_main({MODE: resolve(WORKERS[MODE])}, MODE, SPEC))
