"""The HTTP face of the service (Starlette, served by uvicorn): the routes of `zsris-rt serve`,
their limits and their errors. The work itself is `core.ServiceCore`'s, on its worker pool.

Errors are JSON {"error": "..."}: 400 malformed request, 401 missing or wrong token, 404 unknown
scene, 413 body or image too large, 415 wrong content type or image format, 422 input that
cannot be segmented, 503 (with Retry-After) the queue is full; bad input never yields a 5xx.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import NoMaskError, ZsrisError
from ..image import ImageTooLarge, UnsupportedImageFormat
from .core import (
    PROPOSER_OPTIONS,
    Busy,
    ServiceCore,
    proposer_options,
    weight,
)
from .metrics import CONTENT_TYPE
from .scenes import SceneTooLarge, UnknownScene

PAGE = Path(__file__).resolve().parent / "page"
OPEN_PATHS = ("/health", "/", "/favicon.ico")  # and /static/: no token needed
FORM_FIELDS = {"image", "text", "masks", "alpha", "beta", "candidates", "proposer_mode",
               *PROPOSER_OPTIONS}
SEGMENT_ONLY = {"text", "alpha", "beta", "candidates"}  # fields /scenes refuses
MAX_FIELDS = 200
log = logging.getLogger("zsris_rt.service")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body above the {limit / 2**20:g} MiB limit")


def status_of(exc: ZsrisError) -> int:
    if isinstance(exc, Busy):
        return 503
    if isinstance(exc, UnknownScene):
        return 404
    if isinstance(exc, (SceneTooLarge, ImageTooLarge)):
        return 413
    if isinstance(exc, UnsupportedImageFormat):
        return 415
    return 422


class BodyLimit:
    """Refuse a body above `limit` bytes: by its Content-Length before reading anything, and
    while reading a body sent without one (chunked)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await JSONResponse({"error": str(BodyTooLarge(self.limit).detail)}, 413)(
                scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


class TokenAuth:
    """Bearer token on every route but /health, the page and its assets."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if self.token is None or scope["type"] != "http" or path in OPEN_PATHS or \
                path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                  self.token.encode()):
            await JSONResponse({"error": "missing or wrong token (Authorization: Bearer TOKEN)"},
                               401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(core: ServiceCore, token: str | None = None,
               max_body_bytes: int = 32 << 20) -> Starlette:
    """The ASGI app over `core`; the caller runs it (uvicorn) and closes `core` after."""
    metrics = core.metrics

    def endpoint(name: str, handler: Callable[[Request], Awaitable[Any]]
                 ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            start = time.perf_counter()
            try:
                result = await handler(request)
                response = result if isinstance(result, Response) else JSONResponse(result)
            except HTTPException as exc:
                response = JSONResponse({"error": str(exc.detail)}, exc.status_code,
                                        headers=exc.headers)
            except Busy as exc:
                response = JSONResponse({"error": str(exc)}, 503,
                                        headers={"Retry-After": str(exc.retry_after_s)})
            except NoMaskError as exc:
                response = JSONResponse({"error": str(exc), "no_mask": True}, 422)
            except ZsrisError as exc:
                response = JSONResponse({"error": str(exc)}, status_of(exc))
            except Exception:  # a bug: logged with its traceback, the server goes on
                log.exception("internal error on %s %s", request.method, request.url.path)
                response = JSONResponse({"error": "internal error (see the server's log)"}, 500)
            metrics.requests.labels(name, str(response.status_code)).inc()
            metrics.latency.labels(name).observe(time.perf_counter() - start)
            return response

        return run

    async def on_worker(work: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(core.submit(work))

    async def health(request: Request) -> dict[str, Any]:
        return core.health()

    async def metrics_text(request: Request) -> Response:
        core.health()  # refreshes the scene gauges (expired scenes dropped)
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    async def segment(request: Request) -> dict[str, Any]:
        form = await _form(request, max_body_bytes)
        image, masks = form["image"], form.get("masks")
        texts = form["text"]
        options, alpha, beta = form["options"], form["alpha"], form["beta"]
        candidates = form["candidates"]

        def work() -> dict[str, Any]:
            rgb = core.decode(image)
            return core.segment(rgb, texts, core.masks(masks, rgb), options, alpha, beta,
                                candidates)

        return await on_worker(work)

    async def encode(request: Request) -> dict[str, Any]:
        form = await _form(request, max_body_bytes, texts_allowed=False)
        image, masks, options = form["image"], form.get("masks"), form["options"]

        def work() -> dict[str, Any]:
            rgb = core.decode(image)
            return core.encode(rgb, core.masks(masks, rgb), options)

        return await on_worker(work)

    async def query(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        unknown = sorted(set(body) - {"text", "alpha", "beta"})
        if unknown:
            raise HTTPException(400, f"unknown field(s) {', '.join(unknown)} (text, alpha, beta)")
        texts = body.get("text")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list):
            raise HTTPException(400, '"text" must be a string or a list of strings')
        alpha, beta = weight("alpha", body.get("alpha")), weight("beta", body.get("beta"))
        scene_id = request.path_params["scene_id"]
        core.scenes.get(scene_id)  # an unknown scene is a 404 before the queue
        return await on_worker(lambda: core.query(scene_id, texts, alpha, beta))

    async def delete(request: Request) -> Response:
        core.delete(request.path_params["scene_id"])
        return Response(status_code=204)

    async def page(request: Request) -> Response:
        return FileResponse(PAGE / "index.html")

    routes: list[BaseRoute] = [
        Route("/health", endpoint("health", health)),
        Route("/metrics", endpoint("metrics", metrics_text)),
        Route("/segment", endpoint("segment", segment), methods=["POST"]),
        Route("/scenes", endpoint("scenes", encode), methods=["POST"]),
        Route("/scenes/{scene_id}/query", endpoint("query", query), methods=["POST"]),
        Route("/scenes/{scene_id}", endpoint("delete", delete), methods=["DELETE"]),
    ]
    if (PAGE / "index.html").is_file():
        routes += [Route("/", endpoint("page", page)),
                   Mount("/static", StaticFiles(directory=PAGE), name="static")]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        detail = getattr(exc, "detail", "not found")
        return JSONResponse({"error": str(detail)}, status, headers=getattr(exc, "headers", None))

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    app.add_middleware(TokenAuth, token=token)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app


async def _json_body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "send JSON (Content-Type: application/json)")
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


async def _form(request: Request, max_body_bytes: int, texts_allowed: bool = True
                ) -> dict[str, Any]:
    """The multipart fields of /segment and /scenes, read and checked (files as bytes)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "multipart/form-data":
        raise HTTPException(415, "send multipart/form-data (an `image` file and its fields)")
    try:
        async with request.form(max_files=2, max_fields=MAX_FIELDS,
                                max_part_size=max_body_bytes) as form:
            return await _fields(form, texts_allowed)
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc.message}") from None


async def _fields(form: FormData, texts_allowed: bool) -> dict[str, Any]:
    allowed = FORM_FIELDS
    if not texts_allowed:
        allowed = allowed - SEGMENT_ONLY
    unknown = sorted(set(form.keys()) - allowed)
    if unknown:
        raise HTTPException(400, f"unknown field(s) {', '.join(unknown)}")
    files = {}
    for name in ("image", "masks"):
        values = form.getlist(name)
        if len(values) > 1:
            raise HTTPException(400, f"one `{name}` file per request")
        if values:
            upload = values[0]
            if not isinstance(upload, UploadFile):
                raise HTTPException(400, f"`{name}` must be a file part")
            files[name] = await upload.read()
    if "image" not in files:
        raise HTTPException(400, "missing the `image` file")
    fields: dict[str, str] = {}
    for name in set(form.keys()) - {"image", "masks", "text"}:
        values = form.getlist(name)
        if len(values) != 1 or not isinstance(values[0], str):
            raise HTTPException(400, f"`{name}` must be given once, as a plain field")
        fields[name] = values[0]
    texts = form.getlist("text")
    if any(not isinstance(t, str) for t in texts):
        raise HTTPException(400, "`text` must be plain fields")
    if texts_allowed and not texts:
        raise HTTPException(400, "missing `text`: one or more expressions")
    return {**files, "text": texts, "options": proposer_options(fields),
        "alpha": weight("alpha", fields.get("alpha")),
        "beta": weight("beta", fields.get("beta")),
        "candidates": _flag("candidates", fields.get("candidates"))}


def _flag(name: str, value: str | None) -> bool:
    """An on/off form field: absent, "", false, 0, no, off → False; true, 1, yes, on → True."""
    text = (value or "").strip().lower()
    if text in ("", "false", "0", "no", "off"):
        return False
    if text in ("true", "1", "yes", "on"):
        return True
    raise HTTPException(400, f"`{name}` must be true or false, got {value!r}")
