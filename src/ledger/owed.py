"""Owed points: what a refund could not take back, recovered from later credits.

A refund claws back points that may already be spent. The part that cannot be
taken now is recorded as owed; every later credit to that account first pays
the debt back to where it is owed (the issuance account). Never a negative
balance, never silently forgiven.

Three aggregates hold such an account: a resident's wallet, a complex's common
fund and a merchant's settlement account. `OwedAccount` is the one place their
credits and clawbacks are worked out and applied; each aggregate keeps its own
event classes (their names are part of the stored log) and says which attribute
holds its balance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.events import ISSUANCE, TRADE_CLEARING, Posting


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


class OwedAccount:
    """Credit, clawback and owed mechanics of an account a refund can leave short.

    Mixed into an aggregate that sets `balance_name` (the attribute holding what
    the account has) and keeps `owed_won`. Command methods take the event fields
    from `credit_fields` / `clawback_fields`; the events' `apply` calls
    `apply_credit` / `apply_clawback`.
    """

    if TYPE_CHECKING:  # declared for type checkers only (see the aggregates' state)
        balance_name: str
        owed_won: int

    @property
    def owned_won(self) -> int:
        """What the account has now (the wallet's available points, the fund's balance)."""
        balance: int = getattr(self, self.balance_name)
        return balance

    def credit_fields(self, amount_won: int) -> dict[str, int]:
        """A credit's fields: the part that pays back owed points is worked out here."""
        assert amount_won > 0
        recovered_won, _ = split_credit(amount_won, self.owed_won)
        return {"amount_won": amount_won, "recovered_won": recovered_won}

    def clawback_fields(self, amount_won: int) -> dict[str, int]:
        """A clawback's fields: take what the balance allows, owe the rest."""
        assert amount_won > 0
        taken_won, owed_won = split_clawback(amount_won, self.owned_won)
        return {"amount_won": amount_won, "taken_won": taken_won, "owed_won": owed_won}

    def apply_credit(self, amount_won: int, recovered_won: int) -> None:
        self.owed_won -= recovered_won
        setattr(self, self.balance_name, self.owned_won + amount_won - recovered_won)

    def apply_clawback(self, taken_won: int, owed_won: int) -> None:
        setattr(self, self.balance_name, self.owned_won - taken_won)
        self.owed_won += owed_won

    def check_not_negative(self) -> None:
        assert self.owned_won >= 0 and self.owed_won >= 0


def credit_postings(to_account: str, source: str, amount_won: int,
                    recovered_won: int) -> list[Posting]:
    """A credit from `source`: what is owed goes back to issuance, the rest to the account."""
    return [(source, -amount_won), (ISSUANCE, recovered_won),
            (to_account, amount_won - recovered_won)]


def accrual_postings(to_account: str, amount_won: int, recovered_won: int) -> list[Posting]:
    """An accrual: new points from issuance, less what pays back owed points."""
    kept_won = amount_won - recovered_won
    return [(ISSUANCE, -kept_won), (to_account, kept_won)]


def clawback_postings(from_account: str, taken_won: int) -> list[Posting]:
    """An accrual taken back: what the account still has returns to issuance."""
    return [(from_account, -taken_won), (ISSUANCE, taken_won)]


def returned_payment_postings(from_account: str, amount_won: int, taken_won: int,
                              owed_won: int) -> list[Posting]:
    """Points received for a refunded trade go back to the buyer through trade clearing;
    what the account no longer has is fronted by issuance and owed."""
    return [(from_account, -taken_won), (ISSUANCE, -owed_won), (TRADE_CLEARING, amount_won)]
