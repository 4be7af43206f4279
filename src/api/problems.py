"""Every error the API answers, in one place: RFC 9457 problem details.

A problem carries the stable `code` integrators match on (the domain's codes from
`ledger.errors`, the authentication codes, and the few codes only the HTTP layer has),
a `title` and `detail` in Korean or English as `Accept-Language` prefers (Korean by
default), the HTTP `status`, a `type` URI built from the code and the `instance` path.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.auth import PROBLEM_TYPE_PREFIX, AuthenticationError, problem_for_authentication_error
from api.jwks import IdentityProviderUnavailable
from api.settings import ApiSettings
from ledger import errors, limits
from ledger.engine import DATABASE_ERRORS
from ledger.errors import DatabaseUnavailable, DomainError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_CODE_SCOPE_KEY: Final = "ledger.problem_code"
"""Where a problem response leaves its code in the request's scope (for the metrics)."""
LANGUAGES: Final = ("ko", "en")
DEFAULT_LANGUAGE: Final = "ko"


@dataclass(frozen=True)
class HttpKind:
    """A code that only the HTTP layer produces (the domain's live in ledger.errors)."""

    code: str
    status: int
    english: str
    korean: str


_HTTP_KINDS: dict[str, HttpKind] = {
    kind.code: kind for kind in (
        HttpKind("invalid_encoding", 400,
                 "The request body is not UTF-8 text; JSON bodies must be UTF-8.",
                 "요청 본문이 UTF-8 텍스트가 아닙니다. JSON 본문은 UTF-8이어야 합니다."),
        HttpKind("token_missing", 401, "Authentication required.", "인증이 필요합니다."),
        HttpKind("token_invalid", 401, "The access token is not valid.",
                 "액세스 토큰이 올바르지 않습니다."),
        HttpKind("token_expired", 401, "The access token has expired.",
                 "액세스 토큰이 만료되었습니다."),
        HttpKind("not_found", 404, "No such resource.", "해당 리소스가 없습니다."),
        HttpKind("method_not_allowed", 405, "This method is not allowed here.",
                 "이 주소에서는 허용되지 않는 메서드입니다."),
        HttpKind("body_too_large", 413, "The request body is too large.",
                 "요청 본문이 너무 큽니다."),
        HttpKind("rate_limited", 429, "Too many writes; retry after the indicated time.",
                 "쓰기 요청이 너무 많습니다. 안내된 시간 후에 다시 시도하세요."),
        HttpKind("position_beyond_log", 409,
                 "No write has reached this log position: `consistent_with` must be a "
                 "position a write of this ledger answered with.",
                 "아직 어떤 쓰기도 이 로그 위치에 이르지 않았습니다. consistent_with에는 이 원장의 "
                 "쓰기 응답이 준 위치를 넣어야 합니다."),
        HttpKind("not_yet_consistent", 503,
                 "The read side has not caught up with that position yet; retry shortly.",
                 "조회 데이터가 아직 해당 위치까지 반영되지 않았습니다. 잠시 후 다시 시도하세요."),
        HttpKind("database_unavailable", 503,
                 "The ledger's database is unavailable; nothing was changed. Retry the same "
                 "request (the same Idempotency-Key) after the indicated time.",
                 "원장 데이터베이스에 연결할 수 없어 아무것도 변경되지 않았습니다. 안내된 시간 후 "
                 "같은 요청(같은 Idempotency-Key)으로 다시 시도하세요."),
        HttpKind("identity_provider_unavailable", 503,
                 "The identity provider's signing keys could not be fetched yet; retry the "
                 "request after the indicated time.",
                 "인증 서버의 서명 키를 아직 가져오지 못했습니다. 안내된 시간 후 다시 "
                 "시도하세요."),
        HttpKind("not_ready", 503,
                 "The service cannot serve yet: the database is unavailable or a follower "
                 "of the event log stopped.",
                 "서비스가 아직 준비되지 않았습니다: 데이터베이스에 연결할 수 없거나 이벤트 "
                 "로그 처리가 멈췄습니다."),
        HttpKind("internal_error", 500, "Something went wrong on our side.",
                 "서버 내부 오류가 발생했습니다."),
    )
}


class FieldProblem(BaseModel):
    """One invalid part of a request."""

    location: str = Field(description="Where: `body.amount_won`, `query.limit`, `header.…`.")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, with the stable `code` clients match on."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "type": "/problems/insufficient_points", "title": "사용 가능한 포인트가 부족합니다.",
        "status": 409, "detail": "사용 가능한 포인트가 부족합니다.",
        "code": "insufficient_points", "instance": "/v1/trades"}})

    type: str = Field(description="A URI reference naming the problem type: /problems/{code}.")
    title: str = Field(description="The problem type in words, in the negotiated language.")
    status: int
    detail: str
    code: str = Field(description="Stable snake_case code; never renamed.")
    instance: str = Field(description="The path of the request that failed.")
    errors: list[FieldProblem] | None = Field(
        default=None, description="For `invalid_field`: the fields that failed validation.")


class ApiProblemError(Exception):
    """Raised by routes and dependencies for a problem the HTTP layer defines."""

    def __init__(self, code: str, detail: str = "", *,
                 retry_after_seconds: float | None = None) -> None:
        assert code in _HTTP_KINDS, code
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.kind = _HTTP_KINDS[code]
        self.detail = detail
        self.retry_after_seconds = retry_after_seconds


def every_code() -> dict[str, int]:
    """Every code the API may answer with, and its HTTP status."""
    codes = {kind.code: kind.status for kind in errors.error_kinds()}
    codes.update({kind.code: kind.status for kind in _HTTP_KINDS.values()})
    return codes


def preferred_language(accept_language: str | None) -> str:
    """Korean or English, whichever the header prefers; Korean when it says neither."""
    if not accept_language or len(accept_language) > limits.accept_language_length_max:
        return DEFAULT_LANGUAGE
    best, best_quality = DEFAULT_LANGUAGE, 0.0
    for part in accept_language.split(","):
        tag, _, parameters = part.strip().partition(";")
        primary = tag.strip().lower().split("-", 1)[0]
        quality = 1.0
        parameter = parameters.strip()
        if parameter.startswith("q="):
            try:
                quality = float(parameter[2:])
            except ValueError:
                continue
            if not math.isfinite(quality) or not 0.0 <= quality <= 1.0:
                continue
        if primary in LANGUAGES and quality > best_quality:
            best, best_quality = primary, quality
    return best


def problem_response(request: Request, code: str, status: int, title: str, detail: str,
                     *, language: str, headers: dict[str, str] | None = None,
                     field_problems: list[dict[str, str]] | None = None,
                     extensions: dict[str, Any] | None = None) -> JSONResponse:
    # For the metrics middleware, which counts problems by code.
    request.scope[PROBLEM_CODE_SCOPE_KEY] = code
    content: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_PREFIX}{code}", "title": title, "status": status,
        "detail": detail, "code": code, "instance": request.url.path,
    }
    if field_problems is not None:
        content["errors"] = field_problems
    content.update(extensions or {})
    all_headers = {"Content-Language": language, "Vary": "Accept-Language"}
    all_headers.update(headers or {})
    return JSONResponse(status_code=status, content=content, media_type=PROBLEM_MEDIA_TYPE,
                        headers=all_headers)


def _message(kind: HttpKind | errors.ErrorKind, language: str) -> str:
    return kind.korean if language == "ko" else kind.english


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def domain_problem(request: Request, error: DomainError) -> JSONResponse:
    language = preferred_language(request.headers.get("accept-language"))
    message = error.message(language)
    detail = f"{message} ({error.detail})" if error.detail else message
    return problem_response(request, error.code, error.kind.status, message, detail,
                            language=language)


async def _domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return domain_problem(request, exc)


async def _api_problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblemError)
    language = preferred_language(request.headers.get("accept-language"))
    message = _message(exc.kind, language)
    detail = f"{message} ({exc.detail})" if exc.detail else message
    headers = {}
    if exc.retry_after_seconds is not None:
        headers["Retry-After"] = _retry_after(exc.retry_after_seconds)
    return problem_response(request, exc.code, exc.kind.status, message, detail,
                            language=language, headers=headers)


async def _authentication_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthenticationError)
    language = preferred_language(request.headers.get("accept-language"))
    base = problem_for_authentication_error(exc)  # for its WWW-Authenticate challenge
    message = _message(_HTTP_KINDS[exc.code], language)
    detail = exc.detail if language == "en" else message
    return problem_response(
        request, exc.code, 401, message, detail, language=language,
        headers={"WWW-Authenticate": base.headers["WWW-Authenticate"],
                 "Cache-Control": "no-store"})


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    language = preferred_language(request.headers.get("accept-language"))
    kind = errors.error_kind(errors.invalid_field)
    # The offending input is not echoed back: it may be large or sensitive.
    field_problems = [{"location": _location(error.get("loc", ())),
                       "message": str(error.get("msg", ""))}
                      for error in exc.errors()[:limits.validation_errors_listed_max]]
    where = ", ".join(problem["location"] for problem in field_problems)
    message = _message(kind, language)
    return problem_response(request, kind.code, kind.status, message, f"{message} ({where})",
                            language=language, field_problems=field_problems)


HTTP_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at this request's path (RFC 9110: a 405's
    `Allow` lists them all). Starlette's own 405 names only the first route that
    matched the path, so a path served by two routes (GET and PUT) lost one."""
    return [method for method in HTTP_METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in request.app.router.routes)]


def _invalid_body(request: Request, message_detail: str) -> JSONResponse:
    language = preferred_language(request.headers.get("accept-language"))
    kind = errors.error_kind(errors.invalid_field)
    message = _message(kind, language)
    return problem_response(request, kind.code, kind.status, message, f"{message} (body)",
                            language=language,
                            field_problems=[{"location": "body", "message": message_detail}])


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's "error parsing the body": UTF-8 that its JSON parser still refuses
        # beyond syntax (nested too deeply, an integer of thousands of digits). Like a
        # syntax error, it is a body that is not acceptable JSON: 422 at `body`.
        return _invalid_body(request, "the body is not JSON this API can read")
    code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
        exc.status_code, "internal_error")
    kind = _HTTP_KINDS[code]
    language = preferred_language(request.headers.get("accept-language"))
    message = _message(kind, language)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(request, code, exc.status_code, message, message,
                            language=language, headers=headers)


async def _database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """The database did not answer in time: 503 with Retry-After, never a 500."""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    kind = _HTTP_KINDS["database_unavailable"]
    language = preferred_language(request.headers.get("accept-language"))
    message = _message(kind, language)
    return problem_response(
        request, kind.code, 503, message, message, language=language,
        headers={"Retry-After": _retry_after(limits.retry_after_unavailable_seconds)})


async def _identity_provider_unavailable_handler(request: Request,
                                                exc: Exception) -> JSONResponse:
    """No key of the identity provider was ever fetched: 503 with Retry-After, so the
    client retries its (possibly good) token instead of discarding it."""
    assert isinstance(exc, IdentityProviderUnavailable)
    kind = _HTTP_KINDS["identity_provider_unavailable"]
    language = preferred_language(request.headers.get("accept-language"))
    message = _message(kind, language)
    return problem_response(
        request, kind.code, 503, message, message, language=language,
        headers={"Retry-After": _retry_after(exc.retry_after_seconds),
                 "Cache-Control": "no-store"})


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    kind = _HTTP_KINDS["internal_error"]
    language = preferred_language(request.headers.get("accept-language"))
    message = _message(kind, language)
    return problem_response(request, kind.code, 500, message, message, language=language)


DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    DatabaseUnavailable, *DATABASE_ERRORS)
"""Exceptions that mean the database did not answer: the pool's timeout, a lost or
refused connection, a statement cut off by its timeout."""


def install(app: FastAPI) -> None:
    """Register every exception handler on `app`."""
    app.add_exception_handler(DomainError, _domain_error_handler)
    app.add_exception_handler(ApiProblemError, _api_problem_handler)
    app.add_exception_handler(AuthenticationError, _authentication_error_handler)
    app.add_exception_handler(IdentityProviderUnavailable,
                              _identity_provider_unavailable_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_unavailable_handler)
    app.add_exception_handler(Exception, _unexpected_error_handler)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses: problem+json bodies,
    worded by `response_descriptions` when the document is built."""
    return {status: {"model": Problem, "description": "A problem."} for status in statuses}


def response_descriptions(settings: ApiSettings) -> dict[str, str]:
    """What each error status means, with the limits this server enforces."""
    writes, service_writes = (settings.rate_limit_writes_per_minute,
                              settings.rate_limit_service_writes_per_minute)
    return {
        "400": "`invalid_encoding`: the request body is not UTF-8 (JSON between systems is "
               "UTF-8, RFC 8259). Checked before anything else, authentication included.",
        "401": "`token_missing`, `token_invalid` or `token_expired`: no valid bearer token "
               f"(at most {limits.token_length_max} characters); see WWW-Authenticate.",
        "403": "`forbidden`: the caller's role may never use this operation (or, "
               "`resident_not_in_household`, act for that household).",
        "404": "No such resource, or one the caller may not see (the two answer alike).",
        "409": "Conflicts with the ledger's state, or the Idempotency-Key was used for a "
               "different request (`request_id_reused`); for a read, `consistent_with` is "
               "beyond the log's head (`position_beyond_log`).",
        "413": f"`body_too_large`: the request body is over {settings.body_bytes_max} bytes "
               "(refused before it is read to the end, whatever the operation).",
        "422": "`invalid_field` (or a more specific code): a field is missing, malformed, out "
               "of bounds or not allowed for the caller's role, an unknown field was sent, or "
               "a rule across fields that this document states in words was broken. "
               f"`errors` lists up to {limits.validation_errors_listed_max} fields.",
        "429": f"`rate_limited`: over {writes:,} writes a minute for this caller "
               f"({service_writes:,} for the platform and billing); wait Retry-After "
               "seconds.",
        "503": "`database_unavailable` (nothing changed; retry the same request after "
               "Retry-After), `not_yet_consistent` (the read side did not reach "
               f"`consistent_with` within {settings.read_wait_seconds_max:g} s), "
               "`identity_provider_unavailable` (no key of the identity provider could be "
               "fetched yet) or, from the readiness check, `not_ready`.",
    }
