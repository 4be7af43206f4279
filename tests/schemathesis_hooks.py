"""Schemathesis hooks: the rules the OpenAPI document states in words only, and one
header written as text.

JSON Schema cannot say "at most `amount_won`", "no later than ten minutes from now",
"at most 366 days from `from` to `to`", "each key once in the list" or "not for this
role". A request that breaks such a rule is valid to the schema, and the server rightly
refuses it with 422; the positive-data check counts that as a disagreement. This hook
lets such a 422 pass, and only when the request really breaks the rule the answer names:
the rule is checked here on the request as sent, so a 422 for a request that keeps every
rule still fails the run.

`schemathesis.toml` loads this file for the command line; the test runs with that
configuration too.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

from ledger import limits
from ledger.events import KST
from ledger.policy import ANY_CATEGORY

# Slack for the time between the server's check of "now" and this one.
CLOCK_SLACK = timedelta(seconds=5)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but a 422 that names only rules in words the request breaks."""
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 422:
        return True
    try:
        problem = json.loads(response.content)
        code = problem["code"]
        locations = {field["location"] for field in problem.get("errors") or ()}
    except (ValueError, KeyError, TypeError):
        return True
    named = {location for rule_code, location in broken_rules(case, _role(response))
             if rule_code == code}
    # A rule of the ledger's answers without `errors`; a field's bounds answer with it.
    explained = locations <= named if locations else None in named
    return not explained


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Write header values as text. A link of the document fills `X-Consistent-With` with
    the write's `position`, an integer from a JSON body; on the wire a header is text
    (OpenAPI's `simple` style writes 327 as "327"), but Schemathesis 4.32 hands the
    integer to its HTTP client, which refuses it."""
    for name, value in list((case.headers or {}).items()):
        if isinstance(value, int) and not isinstance(value, bool):
            case.headers[name] = str(value)


Rule = tuple[str, str | None]
"""A problem code, and the field it is reported at (None: the answer lists no field)."""


def broken_rules(case: Any, role: str | None) -> set[Rule]:
    """The rules stated in words that this request breaks."""
    method, path = case.method.upper(), case.operation.path
    body = case.body if isinstance(case.body, dict) else {}
    broken: set[Rule] = set()
    if method == "GET" and path == "/v1/markets/stats" and _stats_range_too_long(case.query):
        broken.add(("invalid_field", None))
    if method == "PUT" and path == "/v1/accrual-policy" and _rates_repeat_a_key(body):
        broken.add(("invalid_field", None))
    if _out_of_bounds(body.get("occurred_at"), limits.occurred_at_earliest,
                      datetime.now(UTC) + timedelta(
                          seconds=limits.occurred_at_ahead_seconds_max) + CLOCK_SLACK):
        broken.add(("invalid_field", "body.occurred_at"))
    if _out_of_bounds(body.get("due_at"), limits.due_at_earliest,
                      limits.due_at_latest - timedelta(microseconds=1)):
        broken.add(("invalid_field", "body.due_at"))
    if method == "POST" and path in ("/v1/residents", "/v1/rent-payments"):
        named = body.get("resident_id") is not None
        if (role == "resident" and named) or (
                role == "coordinator" and path == "/v1/rent-payments" and not named):
            broken.add(("invalid_field", None))
    if method == "POST" and path == "/v1/complexes/{complex_id}/proposals" and (
            _voting_window_invalid(body)):
        broken.add(("invalid_voting_window", None))
    if method == "POST" and path == "/v1/proposals/{proposal_id}/ballots" and (
            (role == "resident") == (body.get("resident_id") is not None)
            or (role == "coordinator" and body.get("consent_ref") is None)):
        broken.add(("invalid_field", None))
    if method == "POST" and path == "/v1/trades":
        amount, points = body.get("amount_won"), body.get("points_used_won", 0)
        if isinstance(amount, int | float) and isinstance(points, int | float) and (
                points > amount):
            broken.add(("points_exceed_amount", None))
        if body.get("seller_kind") == "resident" and body.get("seller_id") == body.get(
                "buyer_id"):
            broken.add(("seller_is_buyer", None))
        # Whether the seller is registered as that kind is the ledger's state.
        broken.add(("seller_kind_mismatch", None))
    if method == "POST" and path == "/v1/group-buys":
        broken |= _group_buy_rules(body)
    if method == "POST" and path == "/v1/group-buys/{group_buy_id}/orders":
        named = body.get("resident_id") is not None
        if (role == "resident" and named) or (role == "coordinator" and not named):
            broken.add(("invalid_field", None))
        # The group buy's unit price and maximum are the ledger's state.
        broken |= {("points_exceed_amount", None), ("invalid_quantity", None),
                   ("invalid_amount", None)}
    return broken


def _group_buy_rules(body: dict[str, Any]) -> set[Rule]:
    """A group buy's rules stated in words: minimum at most maximum, distinct complexes, a
    deadline within the days allowed."""
    broken: set[Rule] = set()
    low, high = body.get("quantity_min"), body.get("quantity_max")
    if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
        broken.add(("invalid_quantity", None))
    complex_ids = body.get("complex_ids")
    if isinstance(complex_ids, list) and len({str(c).lower() for c in complex_ids}) < len(
            complex_ids):
        broken.add(("invalid_field", None))
    if _out_of_bounds(body.get("deadline_at"), datetime.min.replace(tzinfo=UTC),
                      datetime.now(UTC) + timedelta(days=limits.group_buy_open_days_max)
                      - CLOCK_SLACK):
        broken.add(("invalid_field", None))
    return broken


def _voting_window_invalid(body: dict[str, Any]) -> bool:
    """ledger.proposal's window rule: closes after now and after it opens, within bounds."""
    try:
        closes = datetime.fromisoformat(str(body["voting_closes_at"]).upper())
        opens_text = body.get("voting_opens_at")
        moment = datetime.now(UTC)
        opens = datetime.fromisoformat(str(opens_text).upper()) if opens_text else moment
    except (KeyError, ValueError):
        return False
    window = (closes - opens).total_seconds()
    # Near a bound, the server's clock and this one may disagree: count it as broken.
    slack = CLOCK_SLACK.total_seconds()
    return (closes <= moment + CLOCK_SLACK
            or not limits.voting_window_seconds_min + slack <= window
            <= limits.voting_window_seconds_max - slack
            or (opens - moment).total_seconds() > limits.voting_opens_within_seconds_max - slack)


def _stats_range_too_long(query: dict[str, Any] | None) -> bool:
    query = query or {}
    try:
        last = date.fromisoformat(query["to"]) if query.get("to") else datetime.now(KST).date()
        first = (date.fromisoformat(query["from"]) if query.get("from")
                 else last - timedelta(days=limits.stats_days_default - 1))
    except (TypeError, ValueError):
        return False
    return not 0 <= (last - first).days < limits.stats_days_max


def _rates_repeat_a_key(body: dict[str, Any]) -> bool:
    rates = body.get("rates")
    if not isinstance(rates, list):
        return False
    keys = [(row.get("market"), row.get("seller_kind"), row.get("category") or ANY_CATEGORY)
            for row in rates if isinstance(row, dict)]
    return len(set(keys)) < len(keys)


def _out_of_bounds(text: object, earliest: datetime, latest: datetime) -> bool:
    if not isinstance(text, str):
        return False
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return moment.tzinfo is not None and not earliest <= moment <= latest


def _role(response: Any) -> str | None:
    """The `role` claim of the bearer token the request carried (read, not verified)."""
    header = response.request.headers.get("Authorization", "")
    _, _, token = header.partition(" ")
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    role = claims.get("role") if isinstance(claims, dict) else None
    return role if isinstance(role, str) else None
