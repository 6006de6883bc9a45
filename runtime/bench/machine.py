"""What a timing depends on besides the code: the machine and versions, the other processes'
CPU use while it ran, and the process's own peak memory. Read from /proc, never by importing the
measured packages, so the orchestrating process never loads torch."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from .log import say
from .stats import Json

HEAVY_MODULES = ("torch", "transformers", "onnx", "scipy", "safetensors")
ROOT = Path(__file__).resolve().parents[2]  # the checkout (runtime/bench/ → root)


def heavy_modules_loaded() -> list[str]:
    """The heavy packages this process has imported (the runtime's should list none)."""
    return [name for name in HEAVY_MODULES if name in sys.modules]


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


def cpu_model() -> str:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def versions(dists: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of `dists` (None when absent), read without importing them."""
    found: dict[str, str | None] = {}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def machine(dists: tuple[str, ...]) -> Json:
    """CPU model, cores, OS, load, Python, the versions of `dists` and the source checkout."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions(dists), "loadavg_start": os.getloadavg(),
            "source": source_state()}


def source_state() -> Json:
    """The zsris_rt checkout measured: commit and locally modified files (read-only git)."""

    def git(*args: str) -> str:
        try:
            proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                                  text=True)
        except OSError:
            return "?"
        return proc.stdout.strip() if proc.returncode == 0 else "?"

    # "XY path" lines; git() strips the first line's leading space, so split, do not slice.
    changed = [line.split(maxsplit=1)[1] for line in
               git("status", "--porcelain", "--", "runtime", "export").splitlines()
               if len(line.split(maxsplit=1)) == 2]
    return {"root": str(ROOT), "commit": git("rev-parse", "--short", "HEAD"),
            "modified": changed}
