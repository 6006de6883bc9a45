"""Talk to `zsris-rt serve` from Python with the standard library alone: a robot's computer needs
neither the service's stack nor the models to ask it.

    client = Client("http://127.0.0.1:8321")
    scene = client.encode("frame.jpg")                 # the image is encoded once, on the server
    for result in client.query(scene, ["the red mug", "the laptop"]):
        print(result.index, result.score, result.box, result.geometry.centroid)

Results are `RemoteResult`s: the fields of the local `Result` a caller acts on (text, noun
phrase, index, score, scores, box, mask, geometry, timings), decoded from the server's JSON.
Errors are ZsrisErrors with the server's one-line message: `RequestError` for a request the
server refused (4xx), `ServerBusy` for a full queue (503), `NoMaskError` when the proposer kept
no mask, `ServiceUnavailable` when the server cannot be reached or fails.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NoMaskError, ZsrisError
from .geometry import MaskGeometry
from .mask_io import from_coco_rle

ImageInput = str | os.PathLike[str] | bytes | np.ndarray


class RequestError(ZsrisError):
    """The server refused the request (4xx): bad input, unknown scene, wrong token."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ServerBusy(RequestError):
    """503: every worker busy and the queue full; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, 503)
        self.retry_after_s = retry_after_s


class ServiceUnavailable(ZsrisError):
    """The server cannot be reached, or failed (5xx)."""


@dataclass
class RemoteResult:
    """One expression's answer from the server (the JSON record is kept in `record`)."""

    text: str
    sentence: str
    noun_phrase: str
    index: int
    score: float
    scores: np.ndarray  # K float32; -inf where a pruned query never scored a mask
    box: tuple[int, int, int, int]
    geometry: MaskGeometry
    alpha: float
    beta: float
    truncated: bool
    timings: dict[str, float]
    local_computed: int | None
    record: dict[str, Any] = field(repr=False)

    @property
    def mask(self) -> np.ndarray:
        """H×W bool: the chosen mask, decoded from the record's COCO RLE."""
        return from_coco_rle(self.record["rle"])

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RemoteResult:
        box = tuple(int(v) for v in record["box"])
        x0, y0, x1, y1 = box
        centroid = record["centroid"]
        return cls(
            text=record["text"], sentence=record["sentence"], noun_phrase=record["noun_phrase"],
            index=int(record["index"]), score=float(record["score"]),
            scores=np.array([-np.inf if s is None else s for s in record["scores"]],
                            dtype=np.float32),
            box=(x0, y0, x1, y1),
            geometry=MaskGeometry(int(record["area"]), (float(centroid[0]), float(centroid[1])),
                                  float(record["angle_deg"]), (x0, y0, x1, y1)),
            alpha=float(record["alpha"]), beta=float(record["beta"]),
            truncated=bool(record["truncated"]),
            timings={str(k): float(v) for k, v in record["timings_ms"].items()},
            local_computed=record.get("local_computed"), record=record)


class Client:
    """One server; thread-safe (each call is its own HTTP request)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ZsrisError(f"server URL must start with http:// or https://, got {url!r}")
        self.token = token
        self.timeout = timeout

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def segment_json(self, image: ImageInput, texts: str | list[str],
                     masks: ImageInput | None = None, alpha: float | None = None,
                     beta: float | None = None, **options: Any) -> dict[str, Any]:
        """The server's whole /segment document (results, image size, proposer facts)."""
        fields = _fields(texts, alpha, beta, options)
        files = {"image": _image_bytes(image)}
        if masks is not None:
            files["masks"] = _mask_bytes(masks)
        return self._call("POST", "/segment", multipart=(fields, files))

    def segment(self, image: ImageInput, texts: str | list[str],
                masks: ImageInput | None = None, alpha: float | None = None,
                beta: float | None = None, **options: Any) -> list[RemoteResult]:
        """One image, its expressions, nothing kept on the server."""
        document = self.segment_json(image, texts, masks, alpha, beta, **options)
        return [RemoteResult.from_record(r) for r in document["results"]]

    def encode(self, image: ImageInput, masks: ImageInput | None = None,
               **options: Any) -> str:
        """Encode a scene on the server, kept there for `query`; returns its id."""
        files = {"image": _image_bytes(image)}
        if masks is not None:
            files["masks"] = _mask_bytes(masks)
        return str(self._call("POST", "/scenes",
                              multipart=(_fields([], None, None, options), files))["scene_id"])

    def query(self, scene_id: str, texts: str | list[str], alpha: float | None = None,
              beta: float | None = None) -> list[RemoteResult]:
        body: dict[str, Any] = {"text": [texts] if isinstance(texts, str) else list(texts)}
        body.update({k: v for k, v in (("alpha", alpha), ("beta", beta)) if v is not None})
        document = self._call("POST", f"/scenes/{scene_id}/query", json_body=body)
        return [RemoteResult.from_record(r) for r in document["results"]]

    def delete(self, scene_id: str) -> None:
        self._call("DELETE", f"/scenes/{scene_id}")

    def _call(self, method: str, path: str, json_body: Any = None,
              multipart: tuple[list[tuple[str, str]], dict[str, bytes]] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif multipart is not None:
            data, headers["Content-Type"] = _multipart(*multipart)
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServiceUnavailable(f"cannot reach {self.url}: {reason}") from None
        return json.loads(payload) if payload else None


def _error(exc: urllib.error.HTTPError) -> ZsrisError:
    try:
        document = json.loads(exc.read())
        message = str(document.get("error", "")) or f"HTTP {exc.code}"
    except ValueError:
        document, message = {}, f"HTTP {exc.code} {exc.reason}"
    if exc.code == 503:
        return ServerBusy(message, float(exc.headers.get("Retry-After", "1") or 1))
    if exc.code >= 500:
        return ServiceUnavailable(f"server error {exc.code}: {message}")
    if document.get("no_mask"):
        return NoMaskError(message)
    return RequestError(message, exc.code)


def _fields(texts: str | list[str], alpha: float | None, beta: float | None,
            options: dict[str, Any]) -> list[tuple[str, str]]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    fields = [("text", t) for t in texts]
    fields += [(k, repr(float(v))) for k, v in (("alpha", alpha), ("beta", beta))
               if v is not None]
    fields += [(k, str(v)) for k, v in options.items() if v is not None]
    return fields


def _image_bytes(image: ImageInput) -> bytes:
    if isinstance(image, bytes):
        return image
    if isinstance(image, np.ndarray):
        from .image import as_rgb, encode_png

        return encode_png(as_rgb(image))
    return Path(image).read_bytes()


def _mask_bytes(masks: ImageInput) -> bytes:
    if isinstance(masks, bytes):
        return masks
    if isinstance(masks, np.ndarray):
        buffer = io.BytesIO()
        np.savez_compressed(buffer, masks=np.asarray(masks, dtype=bool))
        return buffer.getvalue()
    return Path(masks).read_bytes()


def _multipart(fields: list[tuple[str, str]], files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = "zsris-" + secrets.token_hex(12)
    parts = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     .encode() + value.encode("utf-8") + b"\r\n")
    for name, content in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
