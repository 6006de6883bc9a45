"""What the benchmark scripts share: progress lines, statistics, CPU and memory readings, worker
subprocesses, the machine and source description, and markdown helpers.

The scripts run as `python benchmarks/bench_X.py`, so this folder is first on sys.path and
`import common` finds this file, in the scripts and in their worker subprocesses alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

Json = dict[str, Any]
HEAVY_MODULES = ("torch", "transformers", "onnx", "scipy", "safetensors")
_START = time.perf_counter()


def elapsed() -> float:
    """Seconds since the script started (this module is imported first thing)."""
    return time.perf_counter() - _START


def say(message: str) -> None:
    """A progress line on stderr, stamped with seconds since start."""
    print(f"[{elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- statistics
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), without numpy."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: list[float], percentiles: tuple[int, ...] = ()) -> Json:
    """Median, the asked percentiles ("p90": only telling with enough runs), min and max."""
    return {"median": statistics.median(values),
            **{f"p{q}": percentile(values, q) for q in percentiles},
            "min": min(values), "max": max(values), "n": len(values)}


# --------------------------------------------------------------------------- CPU and memory
def peak_rss() -> Json:
    """Peak RSS of this process: getrusage's ru_maxrss and /proc's VmHWM, VmRSS, in MiB."""
    import resource

    out: Json = {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0].lower() + "_mb"] = int(line.split()[1]) / 1024
    return out


def cpu_seconds() -> tuple[float, float]:
    """(busy seconds of all CPUs since boot, CPU seconds of this process and its threads)."""
    with open("/proc/stat") as stat:
        jiffies = [int(v) for v in stat.readline().split()[1:9]]
    busy = sum(jiffies) - jiffies[3] - jiffies[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


class CpuShare:
    """Other processes' share of all CPUs, and this process's CPU seconds per second, over a span:
    above a few % of others' share the timings are inflated."""

    def __init__(self) -> None:
        self.cpu, self.wall = cpu_seconds(), time.perf_counter()

    def result(self) -> Json:
        (busy, own), wall = cpu_seconds(), time.perf_counter() - self.wall
        other = max(0.0, (busy - self.cpu[0]) - (own - self.cpu[1]))
        return {"other_processes_cpu_share": other / (wall * (os.cpu_count() or 1)),
                "own_cpu_per_wall": (own - self.cpu[1]) / wall}


def busy_share(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over the next `seconds` (this process sleeps meanwhile)."""
    before = cpu_seconds()[0]
    time.sleep(seconds)
    return (cpu_seconds()[0] - before) / (seconds * (os.cpu_count() or 1))


def wait_for_quiet(max_wait: float, report: Json, threshold: float = 0.1) -> None:
    """Wait (at most `max_wait` s) until other processes use under `threshold` of the CPUs;
    add the time waited to report["waited_s"]."""
    if max_wait <= 0:
        return
    start = time.perf_counter()
    share = busy_share()
    while share > threshold and time.perf_counter() - start < max_wait:
        say(f"machine busy ({100 * share:.0f} % of CPUs used by others); waiting")
        share = busy_share(5.0)
    report["waited_s"] = report.get("waited_s", 0.0) + time.perf_counter() - start


# ------------------------------------------------------------------------------------- workers
def draw_scene(rng: Any, width: int, height: int, shapes: int, gradient: float = 0.0) -> Any:
    """A blurred uint8 BGR scene: smooth colour noise, an optional horizontal gradient of ±
    `gradient`, and filled circles and rectangles sized for 480 px on the short side."""
    import cv2
    import numpy as np

    low = rng.uniform(0, 255, (12, 16, 3)).astype(np.float32)
    image = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    if gradient:
        image += np.linspace(-gradient, gradient, width, dtype=np.float32)[None, :, None]
    scale = min(width, height) / 480
    for _ in range(shapes):
        color = [float(c) for c in rng.uniform(0, 255, 3)]
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), int(rng.integers(15, 90) * scale), color, -1)
        else:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(20, 160) * scale),
                                          y + int(rng.integers(20, 120) * scale)), color, -1)
    return np.clip(cv2.GaussianBlur(image, (0, 0), 2.0 * scale), 0, 255).astype(np.uint8)


def argument_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A benchmark script's parser, with the hidden `--worker MODE SPEC` that spawn_worker passes
    and worker_main serves."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    return parser


def worker_main(workers: dict[str, Callable[[Json], Json]], mode: str, spec_path: str) -> int:
    """Entry of a worker subprocess: read the spec, run, write the result JSON."""
    spec = json.loads(Path(spec_path).read_text())
    result = workers[mode](spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


def worker_env(threads: int, runs: Path) -> dict[str, str]:
    """The environment for workers: every BLAS/OpenMP pool limited to `threads`; the runs folder
    in ZSRIS_BENCH_RUNS for the files a worker writes besides its result."""
    env = dict(os.environ, ZSRIS_BENCH_RUNS=str(runs))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def spawn_worker(script: str, mode: str, spec: Json, tag: str, work: str, threads: int) -> Json:
    """Run `script --worker mode` in a fresh Python process (its peak RSS and imported modules are
    that measurement's alone) and return its result; spec and result files are named by `tag`."""
    folder = Path(work) / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    spec = dict(spec, result=str(folder / f"{tag}.result.json"))
    spec_path = folder / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(script).resolve()), "--worker", mode,
                           str(spec_path)], env=worker_env(threads, folder),
                          stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"{Path(script).stem}: worker {tag} failed (exit {proc.returncode})")
    result = json.loads(Path(spec["result"]).read_text())
    result["process_wall_s"] = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------- machine and source
def machine(dists: tuple[str, ...]) -> Json:
    """CPU model, cores, load, Python and the versions of `dists` (read without importing them,
    so the orchestrating process never loads torch)."""
    model = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions, "loadavg_start": os.getloadavg(), "source": source_state()}


def source_state() -> Json:
    """The zsris_rt checkout measured: commit and locally modified files (read-only git)."""
    spec = importlib.util.find_spec("zsris_rt")  # located, not imported: keeps this process small
    root = Path(spec.origin if spec and spec.origin else ".").resolve().parent.parent

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else "?"

    # "XY path" lines; git() strips the first line's leading space, so split, do not slice.
    changed = [line.split(maxsplit=1)[1] for line in
               git("status", "--porcelain", "--", "runtime", "export").splitlines()
               if len(line.split(maxsplit=1)) == 2]
    return {"root": str(root), "commit": git("rev-parse", "--short", "HEAD"),
            "modified": changed}


# -------------------------------------------------------------------------------------- report
def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def machine_lines(m: Json, shown: dict[str, str]) -> list[str]:
    """The report's bullets on the machine, the versions (`shown`: label → distribution) and the
    source checkout."""
    v, src = m["versions"], m["source"]
    return [
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['platform']}; load average {m['loadavg_start'][0]:.2f} at start, "
        f"{m['loadavg_end'][0]:.2f} at end",
        f"- Python {m['python']}, " + ", ".join(f"{label} {v[d]}" for label, d in shown.items()),
        f"- source: {src['root']} at {src['commit']}"
        + (f", uncommitted changes in {', '.join(src['modified'])}" if src["modified"] else ""),
    ]


def wall_line(report: Json) -> str:
    """The report's bullet on the wall time and how much of it went to waiting."""
    return (f"- wall time {report['wall_s']:.0f} s, of which {report.get('waited_s', 0.0):.0f} s "
            "waiting for a quiet machine")
