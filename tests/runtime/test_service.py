"""`zsris-rt serve` against real servers: each one a subprocess on a loopback port, on the demo pack
on ONNX Runtime's CPU backend (`--threads 1`), talked to over real HTTP (the standard library's
http.client, with a small multipart encoder below). Torch-free.

One server with the default limits serves most tests (module scope); a test that needs other limits
(a queue of zero, a 1 MiB body, three scenes, a one-second expiry, a token, SIGTERM) starts its own.
"""

from __future__ import annotations

import http.client
import io
import json
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from serve_process import ServeProcess

pytest.importorskip("uvicorn", reason="the service's extra (zsris-rt[serve]) is not installed")
pytest.importorskip("multipart", reason="the service's extra (zsris-rt[serve]) is not installed")
prom_parser = pytest.importorskip("prometheus_client.parser")
mask_util = pytest.importorskip("pycocotools.mask")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCENE_1 = (EXAMPLES / "scene-1.png").read_bytes()
SCENE_2 = (EXAMPLES / "scene-2.png").read_bytes()
MASKS_1 = (EXAMPLES / "scene-1_masks.npz").read_bytes()
MASKS_2 = (EXAMPLES / "scene-2_masks.npz").read_bytes()
STAR = "the big yellow star"
TOKEN = "test-token-" + secrets.token_hex(8)
SLOW = 48  # points_per_side of a request that keeps a worker busy for a while (2304 prompts)


# ------------------------------------------------------------------------------ HTTP


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Field = tuple[str, "str | tuple[str, bytes]"]


def multipart(fields: Iterable[Field]) -> tuple[bytes, str]:
    """multipart/form-data of (name, text) and (name, (filename, bytes)) parts."""
    boundary = "zsris-" + secrets.token_hex(12)
    out = io.BytesIO()
    for name, value in fields:
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            filename, data = value
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                      "Content-Type: application/octet-stream\r\n\r\n".encode())
            out.write(data)
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
            out.write(value.encode())
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class NoDelay(http.client.HTTPConnection):
    """http.client writes a request's headers and body apart: without TCP_NODELAY the body waits
    for the server's delayed ACK (40 ms a request on Linux)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Client:
    """One keep-alive connection to a server."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 120.0) -> None:
        self.port, self.token, self.timeout = port, token, timeout
        self.conn = NoDelay("127.0.0.1", port, timeout=timeout)

    def close(self) -> None:
        self.conn.close()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        headers = dict(headers or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.conn.close()  # the server closed a kept-alive connection: once more, afresh
            self.conn = NoDelay("127.0.0.1", self.port, timeout=self.timeout)
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        data = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
        return Reply(response.status, response.headers, data)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def form(self, path: str, fields: Iterable[Field]) -> Reply:
        body, kind = multipart(fields)
        return self.request("POST", path, body, {"Content-Type": kind})

    def post_json(self, path: str, document: Any) -> Reply:
        return self.request("POST", path, json.dumps(document).encode(),
                            {"Content-Type": "application/json"})

    def segment(self, image: bytes, *texts: str, masks: bytes | None = None,
                **fields: str) -> Reply:
        parts: list[Field] = [("image", ("image.png", image))]
        parts += [("text", t) for t in texts]
        if masks is not None:
            parts.append(("masks", ("masks.npz", masks)))
        parts += list(fields.items())
        return self.form("/segment", parts)

    def scene(self, image: bytes, masks: bytes | None = None, **fields: str) -> str:
        parts: list[Field] = [("image", ("image.png", image))]
        if masks is not None:
            parts.append(("masks", ("masks.npz", masks)))
        reply = self.form("/scenes", parts + list(fields.items()))
        assert reply.status == 200, reply.body
        return str(reply.json()["scene_id"])

    def query(self, scene_id: str, texts: str | list[str], **weights: Any) -> Reply:
        return self.post_json(f"/scenes/{scene_id}/query", {"text": texts, **weights})


# ------------------------------------------------------------------------------ servers


class Server(ServeProcess):
    """A served process and connections to it."""

    def client(self, token: str | None | bool = True) -> Client:
        """A connection; with the server's token unless `token` is False or another."""
        given = self.token if token is True else (None if token is False else token)
        return Client(self.port, given)


@contextmanager
def serving(*args: str, token: str | None = None) -> Iterator[Server]:
    server = Server(*args, token=token)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serving() as s:
        yield s


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    c = server.client()
    yield c
    c.close()


# ------------------------------------------------------------------------------ helpers


def metrics(c: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed as Prometheus text: (sample name, sorted labels) → value."""
    reply = c.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in prom_parser.text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def requests_counted(samples: dict, endpoint: str, status: int) -> float:
    return samples.get(("zsris_requests_total", (("endpoint", endpoint),
                                                 ("status", str(status)))), 0.0)


def wait_running(c: Client, n: int = 1, timeout: float = 30.0) -> None:
    """Until the server has `n` requests on its workers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics(c).get(("zsris_requests_running", ()), 0) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"the server never had {n} request(s) running")


def without_timings(document: Any) -> Any:
    """A response less what varies from run to run (timings, scene ids)."""
    if isinstance(document, dict):
        return {k: without_timings(v) for k, v in document.items()
                if k not in ("timings_ms", "scene_id")}
    if isinstance(document, list):
        return [without_timings(v) for v in document]
    return document


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    return mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return bytes(data)


def npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height RGB pixels, with a few bytes of data after it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 65536, 9)) + chunk(b"IEND", b"")


def assert_error(reply: Reply, status: int) -> str:
    """`status` with a JSON body {"error": "..."} on one line; the message."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["Content-Type"] == "application/json"
    assert b"\n" not in reply.body.strip()
    document = reply.json()
    assert isinstance(document, dict) and isinstance(document.get("error"), str)
    assert document["error"] and "\n" not in document["error"]
    return str(document["error"])


def assert_healthy(server: Server) -> None:
    c = server.client()
    try:
        reply = c.get("/health")
        assert reply.status == 200 and reply.json()["status"] == "ok"
    finally:
        c.close()
    assert server.proc.poll() is None


# ------------------------------------------------------------------------------ endpoints


def test_health(client: Client) -> None:
    reply = client.get("/health")
    assert reply.status == 200
    health = reply.json()
    assert health["status"] == "ok"
    assert Path(health["pack"]) == ROOT / "engines" / "demo"
    assert health["backend"] == "cpu"
    assert health["precision"] == "fp32"
    from zsris_rt import __version__
    assert health["version"] == __version__
    assert health["proposer"] is True and health["workers"] == 1


def test_segment_matches_the_library(server: Server, client: Client) -> None:
    from zsris_rt import Segmenter

    pack = client.get("/health").json()["pack"]
    expected = Segmenter.from_pack(pack, threads=1).segment(str(EXAMPLES / "scene-2.png"), STAR)

    reply = client.segment(SCENE_2, STAR)
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["masks_from"] == "proposer" and body["image_size"] == [240, 320]
    (result,) = body["results"]
    assert result["text"] == STAR
    assert result["index"] == expected.index
    assert result["score"] == pytest.approx(float(expected.scores[expected.index]), abs=1e-4)
    assert body["num_masks"] == len(expected.scores)
    mask = decode_rle(result["rle"])
    assert mask.shape == (240, 320)
    assert int(mask.sum()) == result["area"]
    np.testing.assert_array_equal(mask, expected.mask)


def test_segment_two_texts(client: Client) -> None:
    texts = (STAR, "the small blue circle")
    reply = client.segment(SCENE_2, *texts)
    assert reply.status == 200, reply.body
    results = reply.json()["results"]
    assert [r["text"] for r in results] == list(texts)
    alone = client.segment(SCENE_2, texts[1]).json()["results"][0]
    assert without_timings(alone) == without_timings(results[1])


def test_segment_with_given_masks(client: Client) -> None:
    reply = client.segment(SCENE_2, STAR, masks=MASKS_2)
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["masks_from"] == "request" and body["num_masks"] == 5
    assert "proposer" not in body
    given = np.load(io.BytesIO(MASKS_2))["masks"].astype(bool)
    (result,) = body["results"]
    np.testing.assert_array_equal(decode_rle(result["rle"]), given[result["index"]])


def test_segment_with_proposer_options(client: Client) -> None:
    reply = client.segment(SCENE_2, STAR, points_per_side="8")
    assert reply.status == 200, reply.body
    facts = reply.json()["proposer"]
    assert facts["grid_points"] == 64 and facts["prompts"] <= 64
    assert client.segment(SCENE_2, STAR, proposer_mode="fast").json()["proposer"]["name"] \
        == "fast"


def test_scene_encode_query_delete(client: Client) -> None:
    reply = client.form("/scenes", [("image", ("s.png", SCENE_2)),
                                    ("masks", ("m.npz", MASKS_2))])
    assert reply.status == 200, reply.body
    made = reply.json()
    assert made["masks"] == 5 and made["image_size"] == [240, 320]
    scene_id = made["scene_id"]

    texts = [STAR, "the small blue circle", "a red square"]
    first = client.query(scene_id, texts)
    assert first.status == 200, first.body
    assert first.json()["scene_id"] == scene_id
    assert [r["text"] for r in first.json()["results"]] == texts
    again = client.query(scene_id, texts)  # cached expressions and f^L: the same answers
    assert without_timings(again.json()) == without_timings(first.json())
    # the same as /segment with the same masks
    once = client.segment(SCENE_2, *texts, masks=MASKS_2).json()["results"]
    assert without_timings(first.json()["results"]) == without_timings(once)

    weighted = client.query(scene_id, STAR, alpha=0.25, beta=0.75)
    assert weighted.status == 200
    (result,) = weighted.json()["results"]
    assert result["alpha"] == 0.25 and result["beta"] == 0.75

    assert client.request("DELETE", f"/scenes/{scene_id}").status == 204
    assert_error(client.query(scene_id, STAR), 404)
    assert_error(client.request("DELETE", f"/scenes/{scene_id}"), 404)


def test_metrics(client: Client) -> None:
    before = metrics(client)
    assert client.segment(SCENE_2, STAR, masks=MASKS_2).status == 200
    assert client.query("0123456789abcdef", STAR).status == 404
    scene_id = client.scene(SCENE_2, masks=MASKS_2)
    after = metrics(client)

    for endpoint, status in (("segment", 200), ("query", 404), ("scenes", 200)):
        assert requests_counted(after, endpoint, status) == \
            requests_counted(before, endpoint, status) + 1, (endpoint, status)
    assert requests_counted(after, "metrics", 200) >= 1
    assert after[("zsris_request_seconds_count", (("endpoint", "segment"),))] >= 1
    stages = {dict(labels)["stage"] for name, labels in after
              if name == "zsris_stage_seconds_count"}
    assert {"trunk", "masked_head", "crop_encoder", "text", "score"} <= stages
    assert ("zsris_stage_seconds_bucket", (("le", "+Inf"), ("stage", "trunk"))) in after
    assert after[("zsris_queue_depth", ())] == 0
    assert after[("zsris_requests_running", ())] == 0
    assert after[("zsris_scenes", ())] >= 1
    assert after[("zsris_scene_bytes", ())] > 0
    assert after[("process_resident_memory_bytes", ())] > 50 << 20
    client.request("DELETE", f"/scenes/{scene_id}")


def test_kept_alive_connection_answers_without_delay(server: Server) -> None:
    """The server's connections have TCP_NODELAY: a response's headers and body go out at once,
    not the body 40 ms later (the client's delayed ACK) on every request after the first few."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    took = []
    try:
        for _ in range(12):
            start = time.perf_counter()
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            took.append(time.perf_counter() - start)
            assert response.status == 200
    finally:
        conn.close()
    assert sorted(took)[len(took) // 2] < 0.025, [round(t * 1e3, 1) for t in took]


def test_unknown_route_and_method(client: Client) -> None:
    assert_error(client.get("/nowhere"), 404)
    assert_error(client.get("/segment"), 405)


# ------------------------------------------------------------------------------ concurrency


def test_eight_concurrent_clients_get_the_serial_answers() -> None:
    with serving("--workers", "2", "--max-queue", "8") as server:
        jobs: list[tuple[str, Callable[[Client], Any]]] = [
            ("segment masks 1", lambda c: c.segment(SCENE_1, STAR, "the green circle",
                                                    masks=MASKS_1)),
            ("segment masks 2", lambda c: c.segment(SCENE_2, STAR, masks=MASKS_2)),
            ("segment proposer", lambda c: c.segment(SCENE_2, STAR, points_per_side="8")),
            ("scene and queries", lambda c: [
                c.query(scene_id, [STAR, "the small blue circle"])
                for scene_id in [c.scene(SCENE_2, masks=MASKS_2)] for _ in range(2)]),
        ]

        def answer(c: Client, job: Callable[[Client], Any]) -> Any:
            replies = job(c)
            replies = replies if isinstance(replies, list) else [replies]
            assert all(r.status == 200 for r in replies), [r.body for r in replies]
            return without_timings([r.json() for r in replies])

        c = server.client()
        serial = {name: answer(c, job) for name, job in jobs}
        c.close()

        def worker(i: int) -> list[tuple[str, Any]]:
            own = server.client()
            try:
                order = jobs[i % len(jobs):] + jobs[:i % len(jobs)]
                return [(name, answer(own, job)) for name, job in order]
            finally:
                own.close()

        with ThreadPoolExecutor(8) as pool:
            answers = [a for batch in pool.map(worker, range(8)) for a in batch]
        assert len(answers) == 8 * len(jobs)
        for name, got in answers:
            assert got == serial[name], name
        counts = metrics(server.client())
        assert sum(v for (n, labels), v in counts.items() if n == "zsris_requests_total"
                   and dict(labels)["status"] not in ("200", "204")) == 0


def test_full_queue_is_503_with_retry_after() -> None:
    with serving("--workers", "1", "--max-queue", "0") as server:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(lambda: server.client().segment(SCENE_2, STAR,
                                                               points_per_side=str(SLOW)))
            probe = server.client()
            wait_running(probe)
            refused = server.client().segment(SCENE_2, STAR, masks=MASKS_2)
            assert_error(refused, 503)
            assert int(refused.headers["Retry-After"]) >= 1
            assert slow.result(120).status == 200
        assert server.client().segment(SCENE_2, STAR, masks=MASKS_2).status == 200
        assert metrics(probe)[("zsris_rejected_busy_total", ())] == 1


# ------------------------------------------------------------------------------ bad requests


def _masks_of_size(h: int, w: int) -> bytes:
    masks = np.zeros((2, h, w), bool)
    masks[0, : h // 2], masks[1, h // 2:] = True, True
    return npz(masks=masks)


Case = Callable[[Client], Reply]
BAD: dict[str, tuple[Case, int]] = {
    "corrupt image bytes": (lambda c: c.segment(b"this is not an image " * 50, STAR), 415),
    "empty image": (lambda c: c.segment(b"", STAR), 415),
    "png header then garbage": (
        lambda c: c.segment(SCENE_2[:33] + b"\0garbage" * 100, STAR), 422),
    "truncated png": (lambda c: c.segment(SCENE_2[: len(SCENE_2) // 2], STAR), 422),
    "empty text": (lambda c: c.segment(SCENE_2, "", masks=MASKS_2), 422),
    "whitespace text": (lambda c: c.segment(SCENE_2, "  \t ", masks=MASKS_2), 422),
    "too long text": (lambda c: c.segment(SCENE_2, "star " * 300, masks=MASKS_2), 422),
    "no text field": (lambda c: c.segment(SCENE_2, masks=MASKS_2), 400),
    "no image field": (lambda c: c.form("/segment", [("text", STAR)]), 400),
    "image as a plain field": (lambda c: c.form("/segment", [("image", "abc"),
                                                             ("text", STAR)]), 400),
    "two images": (lambda c: c.form("/segment", [("image", ("a.png", SCENE_2)),
                                                 ("image", ("b.png", SCENE_2)),
                                                 ("text", STAR)]), 400),
    "unknown field": (lambda c: c.segment(SCENE_2, STAR, masks=MASKS_2, colour="red"), 400),
    "text field on /scenes": (lambda c: c.form("/scenes", [("image", ("a.png", SCENE_2)),
                                                           ("text", STAR)]), 400),
    "json to /segment": (lambda c: c.post_json("/segment", {"text": STAR}), 415),
    "no content type": (lambda c: c.request("POST", "/segment", b"abc"), 415),
    "malformed multipart": (lambda c: c.request(
        "POST", "/segment", b"--x\r\nnonsense",
        {"Content-Type": "multipart/form-data; boundary=x"}), 400),
    "form to /query": (lambda c: c.form("/scenes/0123456789abcdef/query", [("text", STAR)]), 415),
    "invalid json": (lambda c: c.request("POST", "/scenes/0123456789abcdef/query", b"{text:",
                                         {"Content-Type": "application/json"}), 400),
    "json not an object": (lambda c: c.post_json("/scenes/0123456789abcdef/query", [STAR]),
                           400),
    "unknown json field": (lambda c: c.post_json("/scenes/0123456789abcdef/query",
                                                 {"text": STAR, "k": 3}), 400),
    "text not strings": (lambda c: c.post_json("/scenes/0123456789abcdef/query",
                                               {"text": 5}), 400),
    "unknown scene": (lambda c: c.query("0123456789abcdef", STAR), 404),
    "delete unknown scene": (lambda c: c.request("DELETE", "/scenes/0123456789abcdef"), 404),
    "alpha out of range": (lambda c: c.segment(SCENE_2, STAR, masks=MASKS_2, alpha="1.5"), 422),
    "alpha abc": (lambda c: c.segment(SCENE_2, STAR, masks=MASKS_2, alpha="abc"), 422),
    "alpha nan": (lambda c: c.segment(SCENE_2, STAR, masks=MASKS_2, alpha="nan"), 422),
    "beta negative": (lambda c: c.segment(SCENE_2, STAR, masks=MASKS_2, beta="-0.1"), 422),
    "masks of the wrong size": (
        lambda c: c.segment(SCENE_2, STAR, masks=_masks_of_size(100, 120)), 422),
    "garbage masks file": (lambda c: c.segment(SCENE_2, STAR, masks=b"PK\x03\x04garbage"), 422),
    "empty masks": (lambda c: c.segment(SCENE_2, STAR, masks=npz(masks=np.zeros((0, 240, 320),
                                                                               bool))), 422),
    "proposer option not a number": (
        lambda c: c.segment(SCENE_2, STAR, points_per_side="many"), 422),
    "proposer option nan": (lambda c: c.segment(SCENE_2, STAR, pred_iou_thresh="nan"), 422),
    "proposer option out of range": (
        lambda c: c.segment(SCENE_2, STAR, points_per_side="0"), 422),
    "unknown proposer mode": (lambda c: c.segment(SCENE_2, STAR, proposer_mode="best"), 422),
    "proposer options with masks": (
        lambda c: c.segment(SCENE_2, STAR, masks=MASKS_2, points_per_side="8"), 422),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request(server: Server, client: Client, case: str) -> None:
    make, status = BAD[case]
    assert_error(make(client), status)
    assert_healthy(server)


def test_bad_query_weights(server: Server, client: Client) -> None:
    scene_id = client.scene(SCENE_2, masks=MASKS_2)
    for weights in ({"alpha": 2}, {"alpha": "abc"}, {"alpha": "nan"}, {"beta": -1},
                    {"alpha": True}, {"beta": [0.5]}):
        assert_error(client.query(scene_id, STAR, **weights), 422)
    assert_error(client.query(scene_id, ""), 422)
    assert_error(client.query(scene_id, []), 422)
    assert client.query(scene_id, STAR, alpha="0.5").status == 200  # a number as a string
    client.request("DELETE", f"/scenes/{scene_id}")
    assert_healthy(server)


def test_image_bomb_is_refused_before_decoding(server: Server, client: Client) -> None:
    before = server.rss()
    message = assert_error(client.segment(png_claiming(60000, 60000), STAR, masks=MASKS_2), 413)
    assert "60000" in message
    assert_error(client.form("/scenes", [("image", ("b.png", png_claiming(60000, 60000)))]),
                 413)
    # decoding it would take 10 GiB; refused from the header, the server barely moves
    assert server.rss() - before < 32 << 20
    assert_healthy(server)


def _send_raw(port: int, head: bytes, body: Iterable[bytes]) -> Reply:
    """Send a request by hand (body parts as they come) and read the answer, even if the server
    answers and closes before the body is all sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        try:
            for part in body:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Reply(response.status, response.headers, response.read())


def test_small_limits_body_and_eviction() -> None:
    with serving("--max-body-mb", "1", "--max-scenes", "3") as server:
        c = server.client()
        big = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), np.uint8)
        body, kind = multipart([("image", ("big.png", png(big))), ("text", STAR)])
        assert len(body) > 2 << 20
        # with a Content-Length: refused before the body is read
        head = (f"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        assert_error(_send_raw(server.port, head, [body]), 413)
        # chunked, without one: refused once the limit is passed
        head = (f"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n").encode()
        pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)]
        chunks = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces] + [b"0\r\n\r\n"]
        assert_error(_send_raw(server.port, head, chunks), 413)
        assert_healthy(server)
        # a body just under the limit is served
        assert c.segment(SCENE_2, STAR, masks=MASKS_2).status == 200

        # three scenes kept, the least recently used dropped
        ids = [c.scene(SCENE_2, masks=MASKS_2) for _ in range(3)]
        assert c.query(ids[0], STAR).status == 200  # ids[1] is now the least recently used
        ids.append(c.scene(SCENE_1, masks=MASKS_1))
        assert_error(c.query(ids[1], STAR), 404)
        for kept in (ids[0], ids[2], ids[3]):
            assert c.query(kept, STAR).status == 200
        assert c.get("/health").json()["scenes"] == 3
        assert metrics(c)[("zsris_scenes", ())] == 3


def test_token_and_scene_expiry() -> None:
    with serving("--scene-ttl", "1", token=TOKEN) as server:
        anonymous, wrong, right = server.client(False), server.client("x" * 24), server.client()
        assert anonymous.get("/health").status == 200  # /health stays open
        for c in (anonymous, wrong):
            reply = c.segment(SCENE_2, STAR, masks=MASKS_2)
            assert_error(reply, 401)
            assert reply.headers["WWW-Authenticate"] == "Bearer"
            assert_error(c.get("/metrics"), 401)
            assert_error(c.query("0123456789abcdef", STAR), 401)
        assert_error(anonymous.request("GET", "/metrics", headers={"Authorization": TOKEN}), 401)
        assert right.segment(SCENE_2, STAR, masks=MASKS_2).status == 200
        assert right.get("/metrics").status == 200

        scene_id = right.scene(SCENE_2, masks=MASKS_2)
        assert right.query(scene_id, STAR).status == 200
        time.sleep(1.6)  # idle for longer than --scene-ttl
        assert_error(right.query(scene_id, STAR), 404)
        assert right.get("/health").json()["scenes"] == 0


def test_non_loopback_host_needs_a_token() -> None:
    done = subprocess.run([sys.executable, "-m", "zsris_rt.commands", "serve", "--host",
                           "0.0.0.0", "--port", "0"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--token" in lines[0], done.stderr
    assert done.stdout == ""
    short = subprocess.run([sys.executable, "-m", "zsris_rt.commands", "serve", "--port", "0",
                            "--token", "short"], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
    assert short.returncode == 2 and len(short.stderr.strip().splitlines()) == 1


def test_sigterm_answers_the_request_in_flight() -> None:
    server = Server()
    try:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(lambda: server.client().segment(SCENE_2, STAR,
                                                               points_per_side=str(SLOW)))
            wait_running(server.client())
            server.proc.send_signal(signal.SIGTERM)
            reply = slow.result(120)
        assert reply.status == 200, reply.body
        assert reply.json()["results"][0]["text"] == STAR
        assert server.proc.wait(60) == 0
        assert server.proc.stdout is not None
        assert "stopped" in server.proc.stdout.read().decode()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    finally:
        server.stop()


def test_resident_memory_stays_bounded_over_many_scenes() -> None:
    """200 scenes through a store of 8. A scene of scene-1 with its 5 given masks holds 0.37 MiB
    (zsris_scene_bytes / 8: the five 240×320 masks, the features are small), so a server that
    kept every scene would grow by 66 MiB over the last 180; the store holds 8 (3 MiB). After the
    first 20 scenes the allocator's pools and the caches are warm (measured here: < 1 MiB of
    growth over the next 180), so 24 MiB leaves room for allocator noise and still catches a
    leak of a third of every scene."""
    with serving("--max-scenes", "8") as server:
        c = server.client()
        texts = [STAR, "the green circle", "the small red star"]

        def make(i: int) -> None:
            scene_id = c.scene(SCENE_1, masks=MASKS_1)
            reply = c.query(scene_id, texts[i % len(texts)])
            assert reply.status == 200, reply.body

        for i in range(20):
            make(i)
        start = server.rss()
        for i in range(20, 200):
            make(i)
            if i % 20 == 0:
                assert c.get("/health").json()["scenes"] <= 8
        end = server.rss()
        samples = metrics(c)
        assert samples[("zsris_scenes", ())] == 8
        assert samples[("zsris_scene_bytes", ())] < 8 << 20
        assert requests_counted(samples, "scenes", 200) == 200
        grown = end - start
        assert grown < 24 << 20, f"resident memory grew {grown / 2**20:.1f} MiB"
        assert abs(samples[("process_resident_memory_bytes", ())] - end) < 16 << 20
