"""The API's own documentation page: Swagger UI at /docs, served by the hub itself.

Swagger UI comes from ``api/static/swagger`` (swagger-ui-dist, vendored and pinned with its
licence; its README says which version and from where), never from a CDN: a hub on a home network
may have no Internet, and a page that loads scripts from elsewhere could be made to run anything.
The page starts Swagger UI from a script file (``swagger-init.js``), not an inline script, so it
runs under a strict Content Security Policy: scripts and everything else from this origin only;
inline styles are allowed because Swagger UI sets them on its elements.

Every URL in the page is relative, so /docs also works behind a reverse proxy that serves the hub
under a path prefix. The files are served under /static. Neither /docs nor /static is part of the
OpenAPI document. There is no ReDoc page: it would be a second bundle for the same document.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/static"
DOCS_PATH = "/docs"

DOCS_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
"""The page's policy: nothing from another origin, no inline script, no plugin, no framing."""

_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="static/swagger/swagger-ui.css">
<link rel="icon" type="image/png" href="static/swagger/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="static/swagger/swagger-ui-bundle.js"></script>
<script src="static/swagger/swagger-init.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@router.get(DOCS_PATH, response_class=HTMLResponse)
async def swagger_ui() -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title="mcgw API", openapi_url="openapi.json"),
        headers={
            "Content-Security-Policy": DOCS_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def install_docs(app: FastAPI) -> None:
    """Serve /docs and the static files it loads (``app.openapi_url`` must be /openapi.json)."""
    assert app.openapi_url == "/openapi.json", "the page asks for openapi.json next to /docs"
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
