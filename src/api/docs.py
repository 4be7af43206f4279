"""The interactive docs, served whole by the service itself.

FastAPI's own /docs and /redoc load Swagger UI, Redoc and a favicon from outside hosts
(a CDN, fastapi.tiangolo.com, Google Fonts), so on a machine without internet they are
blank pages. Here they are FastAPI's pages with those URLs pointed at files the service
serves from the installed `fastapi-offline` package (Swagger UI 5 and Redoc 2, the
`dist` builds; see FastAPI's "Custom Docs UI Static Assets"). No docs page names a host:
every URL in them is a path on this service. Their scripts still hold a few outside URLs
(Redoc 2 always shows the Redocly logo from cdn.redoc.ly in its side menu), so each page
also carries a Content-Security-Policy that lets the browser fetch from this service
only: offline or not, the docs reach no other host.
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

SWAGGER_UI_PATH: Final = "/docs"
REDOC_PATH: Final = "/redoc"
ASSETS_PATH: Final = "/docs/assets"
ASSETS_PACKAGE: Final = ("fastapi_offline", "static")
"""The package directory the assets come from: swagger-ui-bundle.js, swagger-ui.css,
redoc.standalone.js and favicon.png."""

CONTENT_SECURITY_POLICY: Final = "; ".join((
    "default-src 'none'",
    # FastAPI's pages start Swagger UI and Redoc with an inline script, and both put
    # inline styles; the pages show only this service's own OpenAPI document.
    "script-src 'self' 'unsafe-inline'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",  # the OpenAPI document, and Swagger UI's "Try it out"
    "worker-src 'self' blob:",  # Redoc searches in a worker built from a blob
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
"""Where a docs page may fetch from: this service (and data: URLs), nothing else."""

SWAGGER_UI_PARAMETERS: Final = {
    # Swagger UI's default validator is an online service (validator.swagger.io).
    "validatorUrl": None,
}


def install(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets. Build the app with `docs_url=None` and
    `redoc_url=None` so that FastAPI's CDN-loading pages are not there as well."""
    assert app.docs_url is None
    assert app.redoc_url is None
    assert app.openapi_url is not None
    openapi_path = app.openapi_url
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    @app.get(SWAGGER_UI_PATH, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return _this_service_only(get_swagger_ui_html(
            openapi_url=root + openapi_path,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS))

    @app.get(REDOC_PATH, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return _this_service_only(get_redoc_html(
            openapi_url=root + openapi_path,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False))


def _this_service_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def _root_path(request: Request) -> str:
    """The prefix a proxy mounts the service under (uvicorn's --root-path), as FastAPI's
    own docs pages use it."""
    return str(request.scope.get("root_path", "")).rstrip("/")
