"""The hub's own web page: ``/`` and its files under ``/app/``, served from memory, gzipped.

The page (``api/static/app``) is plain HTML, CSS and ES modules: no build step, nothing loaded
from another origin. Its screens are hash routes (``/#/devices``), so every screen is one URL
the server never has to know, and a pairing link's code (``/#/pair/482913``) stays in the
fragment, which browsers never send to a server nor put in a Referer.

Every response carries a strict Content Security Policy: scripts, styles, images and
connections from this origin only (``connect-src 'self'`` covers the WebSocket), no inline
script or style element, no plugin, no framing, no ``<base>``. The files are read once at start
(a few tens of kilobytes), compressed once, and sent with an ETag and ``Cache-Control:
no-cache`` (a browser revalidates, so an upgraded hub serves its new page at once).

It deliberately does not hold credentials or decide access: the page authenticates with the
cookie ``POST /api/v1/pair`` sets (``api.auth``) and asks the API like any other client.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from api.errors import ApiProblem

APP_DIR = Path(__file__).parent / "static" / "app"
APP_PATH = "/app"

APP_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
"""Nothing from another origin, no inline script or style, no plugin, no framing."""

_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".svg": "image/svg+xml"}
_COMPRESS_MIN_BYTES = 256


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None
    etag: str
    media_type: str


def load_files(root: Path = APP_DIR) -> dict[str, StaticFile]:
    """Every file of the page by its path under ``root`` (``app.js``, ``vendor/x.js``)."""
    files: dict[str, StaticFile] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        media_type = _TYPES.get(path.suffix) or (
            mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        )
        if media_type.startswith("text/") or media_type.endswith(("+xml", "json")):
            media_type += "; charset=utf-8"
        gzipped = (
            gzip.compress(body, compresslevel=9, mtime=0)
            if len(body) >= _COMPRESS_MIN_BYTES
            else None
        )
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[path.relative_to(root).as_posix()] = StaticFile(body, gzipped, etag, media_type)
    return files


def _headers(file: StaticFile) -> dict[str, str]:
    return {
        "Content-Security-Policy": APP_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
        "ETag": file.etag,
        "Vary": "Accept-Encoding",
    }


def serve(file: StaticFile, request: Request) -> Response:
    """The file, gzipped when the client accepts it; 304 when its ETag matches."""
    headers = _headers(file)
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    body = file.body
    if file.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = file.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=file.media_type, headers=headers)


def install_webapp(app: FastAPI, root: Path = APP_DIR) -> None:
    """Serve the page at ``/`` and its files at ``/app/<path>`` (a 404 problem otherwise)."""
    files = load_files(root)
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index(request: Request) -> Response:
        return serve(files["index.html"], request)

    @router.get(APP_PATH + "/{path:path}")
    async def asset(path: str, request: Request) -> Response:
        file = files.get(path)
        if file is None:
            raise ApiProblem(404, f"the web page has no file {path!r}", kind="not-found")
        return serve(file, request)

    app.include_router(router)
