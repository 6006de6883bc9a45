#!/usr/bin/env python
"""Benchmark `zsris-rt serve` over loopback HTTP: throughput and latency of /segment at 1, 4 and
16 concurrent clients, and the latency of /scenes/ID/query on an encoded scene.

The server is a subprocess (`zsris-rt serve --port 0`) on the demo pack (or --pack), with
--workers as many as the cores this process may use and ONNX Runtime at --threads per session
(default 1: the workers are the parallelism), and a queue deep enough that no client is refused
(a 503 would be counted and reported, not retried). Clients are threads of this process, each
on its own keep-alive connection, sending request after request for --seconds per level after a
warm-up request each.

/segment runs on examples/scene-2.png (320×240) with "the big yellow star", twice: with the
pack's proposer (its default settings) and with the 5 given masks of scene-2_masks.npz (CLIP
only). Latency is from the request's first byte sent to the response's last byte read, so it
includes the wait in the server's queue; requests per second are those completed in the level's
window over its length.

/scenes/ID/query: one client, scene-2 encoded once with the proposer; "cached" repeats one
expression (its text embedding and the scene's f^L cached after the first), "new" sends a fresh
expression each time (the text encoder runs; the scene's f^L are already computed).

One run, medians and percentiles as measured; nothing is asserted. The clients share the CPUs
with the server (and with whatever else runs on the machine: the load average is reported).

    python benchmarks/bench_service.py                   # demo pack, 10 s per level
    python benchmarks/bench_service.py --seconds 3       # quicker
    python benchmarks/bench_service.py --pack engines/b32 --out benchmarks/results/service-b32.json
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import json
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from zsris_rt.bench.log import say
from zsris_rt.bench.machine import machine
from zsris_rt.bench.report import table
from zsris_rt.bench.stats import Json, summary

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TEXT = "the big yellow star"
LEVELS = (1, 4, 16)
DISTS = ("onnxruntime", "uvicorn", "starlette", "python-multipart", "numpy", "opencv-python")


def multipart(fields: list[tuple[str, str | tuple[str, bytes]]]) -> tuple[bytes, str]:
    boundary = "bench-" + secrets.token_hex(12)
    out = io.BytesIO()
    for name, value in fields:
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="{value[0]}"\r\n'
                      "Content-Type: application/octet-stream\r\n\r\n".encode() + value[1])
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode())
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class NoDelay(http.client.HTTPConnection):
    """http.client sends a request's headers and body in two writes: without TCP_NODELAY the
    body waits for the server's delayed ACK of the headers (40 ms on Linux), in every request."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Connection:
    """A keep-alive connection; `call` returns (status, seconds, body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = NoDelay("127.0.0.1", port, timeout=300)

    def call(self, method: str, path: str, body: bytes, kind: str) -> tuple[int, float, bytes]:
        start = time.perf_counter()
        self.conn.request(method, path, body=body, headers={"Content-Type": kind})
        response = self.conn.getresponse()
        data = response.read()
        return response.status, time.perf_counter() - start, data

    def close(self) -> None:
        self.conn.close()


class Server:
    def __init__(self, pack: str | None, workers: int, threads: int, max_queue: int) -> None:
        command = [sys.executable, "-m", "zsris_rt.commands", "serve", "--port", "0",
                   "--workers", str(workers), "--threads", str(threads),
                   "--max-queue", str(max_queue)]
        if pack is not None:
            command += ["--pack", pack]
        env = {k: v for k, v in os.environ.items() if pack is not None or k != "ZSRIS_PACK"}
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, cwd=ROOT)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            line = self.proc.stdout.readline().decode() if sel.select(300) else ""
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if found is None:
            self.stop()
            raise SystemExit(f"bench_service: the server did not start ({line!r})")
        self.port = int(found.group(1))
        conn = Connection(self.port)
        status, _, body = conn.call("GET", "/health", b"", "text/plain")
        conn.close()
        self.health = json.loads(body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def latency(seconds: list[float]) -> Json:
    ms = [s * 1e3 for s in seconds]
    return summary(ms, (50, 99)) if ms else {"n": 0}


def load_level(port: int, clients: int, body: bytes, kind: str, seconds: float) -> Json:
    """`clients` threads sending /segment for `seconds` after one warm-up request each."""
    times: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    window: dict[str, float] = {}

    def client() -> None:
        conn = Connection(port)
        conn.call("POST", "/segment", body, kind)  # warm-up, not counted
        ready.wait()
        ready.wait()  # the window starts
        own: list[float] = []
        own_status: dict[int, int] = {}
        while time.perf_counter() < window["end"]:
            status, took, _ = conn.call("POST", "/segment", body, kind)
            own_status[status] = own_status.get(status, 0) + 1
            if status == 200 and time.perf_counter() <= window["end"]:
                own.append(took)
        conn.close()
        with lock:
            times.extend(own)
            for status, n in own_status.items():
                statuses[status] = statuses.get(status, 0) + n

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    window["start"] = time.perf_counter()
    window["end"] = window["start"] + seconds
    ready.wait()
    for t in threads:
        t.join()
    return {"clients": clients, "seconds": seconds, "completed": len(times),
            "requests_per_s": len(times) / seconds, "latency_ms": latency(times),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def expressions() -> itertools.product[tuple[str, ...]]:
    sizes = ("big", "small", "large", "tiny", "huge")
    colours = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
    kinds = ("star", "circle", "square", "triangle", "shape", "thing")
    places = ("", " on the left", " on the right", " at the top", " at the bottom")
    return itertools.product(sizes, colours, kinds, places)


def query_latency(port: int, runs: int) -> Json:
    conn = Connection(port)
    image = (EXAMPLES / "scene-2.png").read_bytes()
    body, kind = multipart([("image", ("scene-2.png", image))])
    status, encode_s, data = conn.call("POST", "/scenes", body, kind)
    if status != 200:
        raise SystemExit(f"bench_service: /scenes answered {status}: {data[:200]!r}")
    scene = json.loads(data)
    path = f"/scenes/{scene['scene_id']}/query"

    def ask(text: str) -> float:
        status, took, data = conn.call("POST", path, json.dumps({"text": text}).encode(),
                                       "application/json")
        if status != 200:
            raise SystemExit(f"bench_service: query answered {status}: {data[:200]!r}")
        return took

    first = ask(TEXT)  # computes the scene's f^L and caches the expression
    cached = [ask(TEXT) for _ in range(runs)]
    fresh = [ask(f"the {s} {c} {k}{p}") for s, c, k, p in
             itertools.islice(expressions(), runs)]
    conn.close()
    return {"masks": scene["masks"], "encode_ms": encode_s * 1e3, "first_query_ms": first * 1e3,
            "cached": latency(cached), "new": latency(fresh)}


def bench_pack(pack: str | None, args: argparse.Namespace) -> Json:
    server = Server(pack, args.workers, args.threads, max_queue=2 * max(LEVELS))
    say(f"server on {server.health['pack']} ({server.health['backend']}), port {server.port}")
    image = (EXAMPLES / "scene-2.png").read_bytes()
    masks = (EXAMPLES / "scene-2_masks.npz").read_bytes()
    inputs = {
        "proposer": multipart([("image", ("scene-2.png", image)), ("text", TEXT)]),
        "given masks": multipart([("image", ("scene-2.png", image)),
                                  ("masks", ("scene-2_masks.npz", masks)), ("text", TEXT)]),
    }
    try:
        segment: dict[str, list[Json]] = {}
        for name, (body, kind) in inputs.items():
            segment[name] = []
            for clients in args.levels:
                say(f"/segment, {name}, {clients} client(s), {args.seconds:g} s")
                segment[name].append(load_level(server.port, clients, body, kind, args.seconds))
        say(f"/scenes/ID/query, {args.query_runs} cached and {args.query_runs} new expressions")
        query = query_latency(server.port, args.query_runs)
    finally:
        server.stop()
    return {"pack": server.health["pack"], "backend": server.health["backend"],
            "proposer_mode": server.health["proposer_mode"], "segment": segment, "query": query}


def render(report: Json) -> str:
    m = report["machine"]
    cfg = report["config"]
    lines = [f"`zsris-rt serve` on {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); "
             f"--workers {cfg['workers']}, --threads {cfg['threads']}; load average "
             f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end; "
             f"{cfg['seconds']:g} s per level, clients on the same machine.", ""]
    for run in report["runs"]:
        pack = Path(run["pack"]).name
        rows = []
        for name, levels in run["segment"].items():
            for level in levels:
                lat = level["latency_ms"]
                refused = sum(v for k, v in level["statuses"].items() if k != "200")
                rows.append([f"/segment ({name})", str(level["clients"]),
                             f"{level['requests_per_s']:.1f}", f"{lat.get('median', 0):.0f}",
                             f"{lat.get('p99', 0):.0f}", str(level["completed"]),
                             str(refused)])
        q = run["query"]
        for name in ("cached", "new"):
            lat = q[name]
            rows.append([f"/scenes/ID/query ({name} expression)", "1",
                         f"{1e3 / lat['median']:.1f}", f"{lat['median']:.1f}",
                         f"{lat['p99']:.1f}", str(lat["n"]), "0"])
        lines += [f"Pack {pack} ({run['backend']}, proposer {run['proposer_mode']}); scene-2 "
                  f"(320×240), \"{TEXT}\"; encoding the scene took {q['encode_ms']:.0f} ms, "
                  f"{q['masks']} masks.", "",
                  table(["request", "clients", "req/s", "p50 ms", "p99 ms", "completed",
                         "non-200"], rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cores = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", action="append", default=None,
                        help="a pack to measure besides the demo pack (repeatable)")
    parser.add_argument("--no-demo", action="store_true", help="only the --pack packs")
    parser.add_argument("--workers", type=int, default=cores,
                        help=f"the server's --workers (default: the usable cores, {cores})")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime threads per session (default 1)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each load level (default 10)")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")],
                        default=list(LEVELS), help="concurrent clients (default 1,4,16)")
    parser.add_argument("--query-runs", type=int, default=200,
                        help="queries of each kind (default 200)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "service.json")
    args = parser.parse_args(argv)

    packs: list[str | None] = ([] if args.no_demo else [None]) + list(args.pack or [])
    report: Json = {"machine": machine(DISTS),
                    "config": {"workers": args.workers, "threads": args.threads,
                               "seconds": args.seconds, "levels": args.levels,
                               "query_runs": args.query_runs, "text": TEXT,
                               "image": "examples/scene-2.png"},
                    "runs": []}
    start = time.perf_counter()
    for pack in packs:
        report["runs"].append(bench_pack(pack, args))
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["wall_s"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(render(report))
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
