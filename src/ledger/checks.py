"""Checks of a command's own fields (shapes and ranges), before any aggregate is read.

The rules that depend on state (enough points, an open invoice, a fund that covers a
spend) live in the aggregates' command methods; these only say whether a field is
well formed, with the bounds in `ledger.limits`.
"""

from __future__ import annotations

from datetime import datetime

from ledger import errors, limits
from ledger.errors import DomainError

BILLING_PERIOD_LENGTH = 7  # "YYYY-MM"


def check_amount(amount_won: object, *, allow_zero: bool = False) -> int:
    if type(amount_won) is not int:
        raise DomainError(errors.invalid_amount, f"{amount_won!r} is not an integer")
    lowest = 0 if allow_zero else 1
    if not lowest <= amount_won <= limits.amount_won_max:
        raise DomainError(errors.invalid_amount, f"{amount_won} outside {lowest}..")
    return amount_won


def check_text(name: str, value: object, length_max: int = limits.string_length_max) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > length_max:
        raise DomainError(errors.invalid_field, f"{name}: 1 to {length_max} characters")
    return value


def check_identifier(name: str, value: object) -> str:
    return check_text(name, value, limits.identifier_length_max)


def check_billing_period(value: object) -> str:
    text = check_text("billing_period", value, BILLING_PERIOD_LENGTH)
    try:
        year = datetime.strptime(text, "%Y-%m").year
    except ValueError:
        raise DomainError(errors.invalid_field, "billing_period: YYYY-MM") from None
    if not limits.calendar_year_earliest <= year <= limits.calendar_year_latest:
        raise DomainError(errors.invalid_field, f"billing_period: a month of "
                          f"{limits.calendar_year_earliest}..{limits.calendar_year_latest}")
    return text


def check_aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise DomainError(errors.invalid_field, f"{name}: a timezone-aware time")
    return value


