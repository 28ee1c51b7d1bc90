"""The codec endpoint's interactive docs (Swagger UI at ``/docs``) without the internet, and the
JSON error body its OpenAPI schema documents.

FastAPI's own ``/docs`` page loads Swagger UI's script and stylesheet from a CDN: on a machine
without the internet it is a blank page. Here the same page loads them from the service itself,
which serves the files of the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads the
OpenAPI 3.1 schemas FastAPI writes). Only those named files are served, from the package's folder.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

ASSETS_PATH = "/docs/assets"
# The files the page loads, with their media types: nothing else is served from the folder.
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}


class ErrorBody(BaseModel):
    """Every refusal: a 4xx (or 503) status and this JSON body."""

    error: str = Field(description="what was refused and why, in one line")


def error_responses(reasons: dict[int, str]) -> dict[int, dict]:
    """``responses=`` for a route: each status with its reasons and the JSON error body."""
    return {status: {"model": ErrorBody, "description": text} for status, text in sorted(reasons.items())}


def swagger_ui_folder() -> Path | None:
    """Swagger UI's files from the installed package, or None when it is not installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    folder = Path(str(swagger_ui_path))
    return folder if all((folder / name).is_file() for name in ASSETS) else None


def add_offline_docs(app, title: str | None = None) -> bool:
    """Serve ``/docs`` with Swagger UI's files from this service (create the app with
    ``docs_url=None``). Returns False, and serves FastAPI's CDN page instead, when the package
    is missing (an environment older than requirements.lock)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, HTMLResponse, Response

    folder = swagger_ui_folder()
    page_title = f"{title or app.title} - docs"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if folder is None:
            return get_swagger_ui_html(openapi_url=app.openapi_url, title=page_title)
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=page_title,
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        )

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if folder is None or name not in ASSETS:
            return Response(status_code=404)
        return FileResponse(folder / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=86400"})

    return folder is not None
