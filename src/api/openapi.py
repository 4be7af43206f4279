"""The OpenAPI document: FastAPI's, completed with what the server enforces.

FastAPI writes the paths and the schemas of the bodies. This module adds what only
the server knows: every error response as problem+json, worded with this server's
limits (from `ledger.limits` and the settings, never restated); the headers those
responses carry (Retry-After, WWW-Authenticate, Idempotent-Replayed); the roles that
may call each operation (`x-roles`); and links from each write to the read that shows
it, passing the write's `position` as `consistent_with`, the read-your-writes contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, APIRouter

from api import problems
from api.auth import Role
from api.problems import PROBLEM_MEDIA_TYPE
from api.routes_common import ROLES_OF
from api.settings import ApiSettings


def introduction(settings: ApiSettings) -> str:
    """The document's introduction: the conventions, and the limits no schema carries."""
    return (
        "Wallets, common funds, rent payments by points and market statistics of the "
        "rental-housing points platform.\n\n"
        "- **Writes** need an `Idempotency-Key` header and answer with the event-log "
        "`position` they reached; pass it as `consistent_with` (or `X-Consistent-With`) to a "
        "read to see your write (the links of each write's response show where). A "
        "position beyond the log's head is refused with 409 `position_beyond_log`.\n"
        "- **Errors** are RFC 9457 problem details (`application/problem+json`) with a "
        "stable `code`, in Korean unless `Accept-Language` prefers English.\n"
        f"- **Bodies** are UTF-8 JSON (else 400 `invalid_encoding`) of at most "
        f"{settings.body_bytes_max} bytes (else 413 `body_too_large`, on every "
        "operation), checked before anything else.\n"
        f"- **Writes per minute**: {settings.rate_limit_writes_per_minute:,} per caller, "
        f"{settings.rate_limit_service_writes_per_minute:,} for the platform and billing "
        "(else 429 `rate_limited` with Retry-After).\n"
        "- **Roles**: `x-roles` lists who may call an operation; any other role gets 403 "
        "`forbidden`.\n"
        "- **Methods**: a method a path does not serve, OPTIONS and HEAD included, answers "
        "405 `method_not_allowed` with an `Allow` header listing the path's methods.\n"
        "- **When the database is away**, every operation but the health check answers "
        "within seconds: 503 with Retry-After.")


_RETRY_AFTER: Final = {"Retry-After": {
    "description": "Seconds to wait before retrying.", "required": True,
    "schema": {"type": "integer", "minimum": 1}}}
_RESPONSE_HEADERS: Final[dict[str, dict[str, Any]]] = {
    "401": {"WWW-Authenticate": {
        "description": "The Bearer challenge (RFC 6750).", "required": True,
        "schema": {"type": "string"}}},
    "429": _RETRY_AFTER,
    "503": _RETRY_AFTER,
}
_REPLAYED_HEADER: Final = {"Idempotent-Replayed": {
    "description": "`true` when this is the first response again, for a retry with the "
                   "same Idempotency-Key and body; absent otherwise.",
    "schema": {"type": "string", "enum": ["true"]}}}

_READ_YOUR_WRITE: Final = {"consistent_with": "$response.body#/position",
                           "X-Consistent-With": "$response.body#/position"}
_COMPLEX = {"complex_id": "$response.body#/complex_id"}
_RESIDENT = {"resident_id": "$response.body#/resident_id"}
_MERCHANT = {"merchant_id": "$response.body#/merchant_id"}
_PAYMENT = {"payment_id": "$response.body#/payment_id"}
_PROPOSAL = {"proposal_id": "$response.body#/proposal_id"}
_GROUP_BUY = {"group_buy_id": "$response.body#/group_buy_id"}
_LINKS: Final[dict[tuple[str, str], dict[str, tuple[str, str, dict[str, str]]]]] = {
    ("post", "/v1/complexes"): {
        "fund": ("get", "/v1/complexes/{complex_id}/fund", _COMPLEX),
        "spend": ("post", "/v1/complexes/{complex_id}/fund/spends", _COMPLEX)},
    ("post", "/v1/households"): {
        "rent": ("get", "/v1/households/{household_id}/rent",
                 {"household_id": "$response.body#/household_id"})},
    ("post", "/v1/residents"): {
        "wallet": ("get", "/v1/wallets/{resident_id}", _RESIDENT),
        "move_out": ("post", "/v1/residents/{resident_id}/move-out", _RESIDENT)},
    ("post", "/v1/merchants"): {
        "settlement": ("get", "/v1/merchants/{merchant_id}/settlement", _MERCHANT),
        "payout": ("post", "/v1/merchants/{merchant_id}/payouts", _MERCHANT)},
    ("post", "/v1/trades"): {
        "refund": ("post", "/v1/trades/{trade_id}/refund",
                   {"trade_id": "$response.body#/trade_id"})},
    ("post", "/v1/rent-payments"): {
        "payment": ("get", "/v1/rent-payments/{payment_id}", _PAYMENT),
        "settle": ("post", "/v1/rent-payments/{payment_id}/settle", _PAYMENT),
        "release": ("post", "/v1/rent-payments/{payment_id}/release", _PAYMENT)},
    ("post", "/v1/rent-payments/{payment_id}/settle"): {
        "payment": ("get", "/v1/rent-payments/{payment_id}", _PAYMENT)},
    ("post", "/v1/rent-payments/{payment_id}/release"): {
        "payment": ("get", "/v1/rent-payments/{payment_id}", _PAYMENT)},
    ("post", "/v1/complexes/{complex_id}/fund/spends"): {
        "fund": ("get", "/v1/complexes/{complex_id}/fund", _COMPLEX)},
    ("post", "/v1/complexes/{complex_id}/fund/allowance"): {
        "fund": ("get", "/v1/complexes/{complex_id}/fund", _COMPLEX)},
    ("post", "/v1/complexes/{complex_id}/proposals"): {
        "proposal": ("get", "/v1/proposals/{proposal_id}", _PROPOSAL),
        "ballot": ("post", "/v1/proposals/{proposal_id}/ballots", _PROPOSAL),
        "close": ("post", "/v1/proposals/{proposal_id}/close", _PROPOSAL)},
    ("post", "/v1/proposals/{proposal_id}/ballots"): {
        "proposal": ("get", "/v1/proposals/{proposal_id}", _PROPOSAL)},
    ("post", "/v1/proposals/{proposal_id}/close"): {
        "proposal": ("get", "/v1/proposals/{proposal_id}", _PROPOSAL)},
    ("post", "/v1/group-buys"): {
        "group_buy": ("get", "/v1/group-buys/{group_buy_id}", _GROUP_BUY),
        "order": ("post", "/v1/group-buys/{group_buy_id}/orders", _GROUP_BUY),
        "close": ("post", "/v1/group-buys/{group_buy_id}/close", _GROUP_BUY)},
    ("post", "/v1/group-buys/{group_buy_id}/orders"): {
        "group_buy": ("get", "/v1/group-buys/{group_buy_id}", _GROUP_BUY),
        "cancel": ("post", "/v1/group-buy-orders/{order_id}/cancel",
                   {"order_id": "$response.body#/order_id"})},
    ("post", "/v1/group-buy-orders/{order_id}/cancel"): {
        "group_buy": ("get", "/v1/group-buys/{group_buy_id}", _GROUP_BUY)},
    ("post", "/v1/group-buys/{group_buy_id}/close"): {
        "group_buy": ("get", "/v1/group-buys/{group_buy_id}", _GROUP_BUY)},
}
"""Each write, and what may follow it: the read that shows what it wrote (the link names
every parameter of the read, the write's `position` among them), or a write on what it
created (the link names the new thing's id)."""


def openapi_document(app: FastAPI, settings: ApiSettings,
                     routers: Sequence[APIRouter]) -> dict[str, Any]:
    """FastAPI's document, with every error response declared as problem+json and worded
    with this server's limits, the headers responses carry, roles and links. `routers`
    are the ones the app includes (their routes name the roles)."""
    document = get_openapi(title=app.title, version=app.version,
                           description=app.description, routes=app.routes)
    descriptions = problems.response_descriptions(settings)
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    paths: dict[str, dict[str, Any]] = document.get("paths", {})
    for operations in paths.values():
        for operation in operations.values():
            is_write = any(parameter["name"] == "Idempotency-Key"
                           for parameter in operation.get("parameters", []))
            for parameter in operation.get("parameters", []):
                parameter["schema"] = _not_null(parameter["schema"])
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    response["description"] = descriptions[status]
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}
                    if status in _RESPONSE_HEADERS:
                        response["headers"] = _RESPONSE_HEADERS[status]
                elif status[0] == "2" and is_write:
                    response["headers"] = _REPLAYED_HEADER
    for route in (route for router in routers for route in router.routes):
        if isinstance(route, APIRoute):
            roles = _roles(route.dependant)
            for method in route.methods or ():
                if roles is not None:
                    paths[route.path_format][method.lower()]["x-roles"] = [
                        role.value for role in roles]
    for (method, path), links in _LINKS.items():
        operation = paths[path][method]
        success = next(status for status in operation["responses"] if status[0] == "2")
        operation["responses"][success]["links"] = {
            name: _link(paths, target_method, target_path, parameters)
            for name, (target_method, target_path, parameters) in links.items()}
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def _link(paths: dict[str, dict[str, Any]], method: str, path: str,
          parameters: dict[str, str]) -> dict[str, Any]:
    target = paths[path][method]
    if method != "get":
        return {"operationId": target["operationId"], "parameters": parameters,
                "description": "Act on what this write created."}
    names = {parameter["name"] for parameter in target.get("parameters", [])}
    values = {**parameters, **_READ_YOUR_WRITE}
    assert set(values) == names, (path, names)  # the link fills in the whole read
    return {"operationId": target["operationId"], "parameters": values,
            "description": "Read what this write wrote, once the read side has it."}


def _roles(dependant: Dependant) -> tuple[Role, ...] | None:
    """The roles a route's `writer` or `reader` lets through; None for a route that
    asks for no token (the health and readiness checks)."""
    for dependency in dependant.dependencies:
        if dependency.call in ROLES_OF:
            return ROLES_OF[dependency.call]
        found = _roles(dependency)
        if found is not None:
            return found
    return None


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without the `null` FastAPI adds for an optional parameter: a
    query or header value is text and is never null; an absent one is not given."""
    branches = schema.get("anyOf")
    if not branches or {"type": "null"} not in branches:
        return schema
    others = [branch for branch in branches if branch != {"type": "null"}]
    assert len(others) == 1, schema
    kept = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    if schema.get("default") is not None:
        kept["default"] = schema["default"]
    return {**others[0], **kept}
