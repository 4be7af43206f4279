"""Schemathesis over the OpenAPI document, with valid tokens of several roles.

Every operation gets generated requests (bounded, so the whole run stays well under
a minute) sent by an operator, an auditor, the platform, billing, a manager and a
resident of a populated community. Checked: no server errors, every status code and
content type is the one documented, every response body and header matches its schema.
"""

# Fixtures come from test_api_fixtures by import, so tests "redefine" their names.
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.problems import every_code
from test_api_fixtures import ApiWorld, api, key_dir  # noqa: F401  (fixtures)

examples_per_operation_and_role = 8
ROLES = ("operator", "auditor", "platform", "billing", "manager", "resident")


def not_a_server_error(ctx: Any, response: Any, case: Any) -> bool:
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


def _request(case: Any, headers: dict[str, str]) -> dict[str, Any]:
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    request: dict[str, Any] = {"method": kwargs["method"], "url": kwargs["url"],
                               "headers": kwargs.get("headers") or {},
                               "params": kwargs.get("params") or None}
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        request["content"] = kwargs["data"]
    return request


def _fuzz(api: ApiWorld, operation: Any, headers: dict[str, str],
          seen_statuses: dict[int, int], codes: dict[str, int]) -> None:
    @settings(max_examples=examples_per_operation_and_role, deadline=None, database=None,
              derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = api.client.request(**_request(case, headers))
        seen_statuses[response.status_code] = seen_statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert response.json()["code"] in codes

    run()


def test_openapi_fuzzing_finds_no_server_errors_and_no_schema_violations(api: ApiWorld) -> None:
    """Generated requests against every operation, as six roles: zero 5xx, zero responses
    outside the documented statuses, media types, headers and schemas."""
    schema = schemathesis.openapi.from_dict(api.app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    seen_statuses: dict[int, int] = {}
    codes = every_code()
    for operation in operations:
        for role in ROLES:
            _fuzz(api, operation, dict(api.callers[role].headers), seen_statuses, codes)
    # The fuzzing reached both accepted and refused requests.
    assert any(200 <= status < 300 for status in seen_statuses), seen_statuses
    assert 422 in seen_statuses and 403 in seen_statuses, seen_statuses


def test_openapi_declares_security_and_problem_responses(api: ApiWorld) -> None:
    """Every operation but the health and readiness checks requires the bearer scheme, and
    every error response it documents is problem+json."""
    document = api.app.openapi()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path not in ("/v1/health", "/v1/ready"):
                assert operation.get("security") == [{"HTTPBearer": []}], (method, path)
                assert {"401", "403", "404", "422"} <= set(operation["responses"]), path
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], path
