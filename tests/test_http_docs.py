"""The endpoint's /docs page loads nothing from the internet, and its OpenAPI schema documents the
refusals. The FastAPI app of serve/app.py, called in-process (no Ray cluster is started)."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from resulic.serving.http_docs import ASSETS, add_offline_docs


@pytest.fixture(scope="module")
def service():
    from serve.app import api

    return TestClient(api)


URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""")


def _page_urls(html: str) -> list[str]:
    """Every URL the page loads: script/link/img sources and Swagger UI's ``url:`` (the schema)."""
    return [a or b for a, b in URL.findall(html)]


def test_docs_page_loads_swagger_ui_from_the_service_itself(service):
    page = service.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = _page_urls(page.text)
    assert urls and not [u for u in urls if "://" in u or u.startswith("//")], urls  # nothing from a CDN
    assert "/openapi.json" in urls
    for name, media in ASSETS.items():
        assert f"/docs/assets/{name}" in urls
        asset = service.get(f"/docs/assets/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media) and len(asset.content) > 500
    js = service.get("/docs/assets/swagger-ui-bundle.js").text
    assert re.search(r"swagger-ui|SwaggerUIBundle", js)
    assert service.get("/openapi.json").json()["openapi"].startswith("3.1")  # read by Swagger UI 5


def test_only_the_named_assets_are_served(service):
    for path in ("/docs/assets/index.html", "/docs/assets/..%2F__init__.py", "/docs/assets/swagger-initializer.js",
                 "/redoc"):
        assert service.get(path).status_code == 404, path


def test_openapi_documents_every_refusal(service):
    schema = service.get("/openapi.json").json()
    statuses = {path: set(ops["post"]["responses"]) for path, ops in schema["paths"].items() if "post" in ops}
    # the refusals tests/test_serve.py provokes over real HTTP, plus an unavailable deployment
    assert {"400", "404", "413", "415", "503"} <= statuses["/v1/compress"]
    assert {"400", "413", "422", "503"} <= statuses["/v1/decompress"]
    refusal = schema["paths"]["/v1/decompress"]["post"]["responses"]["422"]
    assert refusal["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert schema["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    for path in ("/v1/models", "/healthz"):
        assert "503" in schema["paths"][path]["get"]["responses"]


def test_a_missing_package_falls_back_to_the_cdn_page(monkeypatch):
    import resulic.serving.http_docs as http_docs

    monkeypatch.setattr(http_docs, "swagger_ui_folder", lambda: None)
    app = FastAPI(docs_url=None)
    assert add_offline_docs(app) is False
    client = TestClient(app)
    assert "cdn.jsdelivr.net" in client.get("/docs").text
    assert client.get("/docs/assets/swagger-ui.css").status_code == 404
