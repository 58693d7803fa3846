"""Every error leaves the API as ``{"error": {"code", "message", "param"}}``, never a traceback.

    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=16 * 1024 * 1024)
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._exceptions import InvalidRequestError, OvernightError, PayloadTooLargeError

__all__ = ["BodySizeLimit", "install_error_handlers", "openai_error_body", "validation_error"]

log = logging.getLogger("overnight.api")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 400: "invalid_request"}


_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
OPENAI_PATHS = ("/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/files", "/v1/batches")
"""Routes that answer errors in OpenAI's shape instead of Overnight's."""


def openai_error_body(error: OvernightError) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = _OPENAI_ERROR_TYPES.get(error.status_code, "server_error" if error.status_code >= 500 else "invalid_request_error")
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}


def error_body_for(path: str, error: OvernightError) -> dict[str, Any]:
    return openai_error_body(error) if path.startswith(OPENAI_PATHS) else error.to_body()


def error_response(status: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "param": param}}, status_code=status, headers=headers
    )


def validation_error(exc: ValidationError | RequestValidationError, prefix: str = "") -> InvalidRequestError:
    """Turn the first pydantic error into a 422 naming the offending field."""
    first: dict[str, Any] = exc.errors()[0]
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body",)]
    param = ".".join(([prefix] if prefix else []) + loc) or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return InvalidRequestError(
        f"{param}: {message}" if param else message, code="invalid_request", param=param, status_code=422
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OvernightError)
    async def _overnight(request: Request, exc: OvernightError) -> JSONResponse:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
        return JSONResponse(error_body_for(request.url.path, exc), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(exc)
        return JSONResponse(error.to_body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "The service hit an unexpected error; it was logged.")


class BodySizeLimit:
    """Pure ASGI middleware: refuse bodies over ``max_bytes`` with 413, even when chunked.

    ``per_path`` sets other limits for given paths (file uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.max_bytes)
        too_large = PayloadTooLargeError(
            f"request body is larger than {limit} bytes; split it (bulk accepts up to 10,000 jobs)",
            param="body",
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await JSONResponse(error_body_for(scope["path"], too_large), status_code=413)(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large
            return message

        try:
            await self.app(scope, limited_receive, send)
        except PayloadTooLargeError:
            await JSONResponse(error_body_for(scope["path"], too_large), status_code=413)(scope, receive, send)
