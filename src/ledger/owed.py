"""Owed points: what a refund could not take back, recovered from later credits.

A refund claws back points that may already be spent. The part that cannot be
taken now is recorded as owed; every later credit to that account first pays
the debt back to where it is owed (the issuance account). Never a negative
balance, never silently forgiven.
"""

from __future__ import annotations


def split_credit(credit_won: int, owed_won: int) -> tuple[int, int]:
    """(recovered_won, kept_won): a credit first pays back what is owed."""
    assert credit_won >= 0 and owed_won >= 0
    recovered_won = min(credit_won, owed_won)
    return recovered_won, credit_won - recovered_won


def split_clawback(clawback_won: int, balance_won: int) -> tuple[int, int]:
    """(taken_won, owed_won): take what the balance allows, owe the rest."""
    assert clawback_won >= 0 and balance_won >= 0
    taken_won = min(clawback_won, balance_won)
    return taken_won, clawback_won - taken_won
