"""Rejections: named domain errors with stable codes.

A rejection means the command was refused and nothing changed. Its `code` is a
stable snake_case string that integrators match on; codes are never renamed.
Each code has an English and a Korean message and the HTTP status the API uses.
Programmer errors are not rejections; they are `assert`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorKind:
    code: str
    status: int
    english: str
    korean: str


_KINDS: dict[str, ErrorKind] = {}


def _kind(code: str, status: int, english: str, korean: str) -> str:
    assert code not in _KINDS, code
    _KINDS[code] = ErrorKind(code, status, english, korean)
    return code


# Input that is malformed whatever the ledger's state.
invalid_amount = _kind(
    "invalid_amount", 422, "The amount must be a whole number of won within the limits.",
    "금액은 한도 내의 정수(원)여야 합니다.")
invalid_field = _kind(
    "invalid_field", 422, "A field is missing, too long or not allowed.",
    "필드가 없거나, 너무 길거나, 허용되지 않습니다.")
invalid_rate = _kind(
    "invalid_rate", 422, "An accrual rate must be between 0 and 10,000 basis points.",
    "적립률은 0에서 10,000 베이시스포인트 사이여야 합니다.")
invalid_market = _kind(
    "invalid_market", 422, "Unknown market.", "알 수 없는 마켓입니다.")
invalid_seller_kind = _kind(
    "invalid_seller_kind", 422, "Unknown seller kind.", "알 수 없는 판매자 유형입니다.")
invalid_purpose = _kind(
    "invalid_purpose", 422, "A fund spend's purpose must be facility, event or upkeep.",
    "공용포인트 사용 목적은 시설, 행사, 관리 중 하나여야 합니다.")
# References to things that do not exist.
unknown_complex = _kind(
    "unknown_complex", 404, "No such complex.", "해당 단지가 없습니다.")
unknown_household = _kind(
    "unknown_household", 404, "No such household.", "해당 세대가 없습니다.")
unknown_resident = _kind(
    "unknown_resident", 404, "No such resident.", "해당 입주민이 없습니다.")
unknown_merchant = _kind(
    "unknown_merchant", 404, "No such merchant.", "해당 판매자가 없습니다.")
unknown_trade = _kind(
    "unknown_trade", 404, "No such trade.", "해당 거래가 없습니다.")
unknown_invoice = _kind(
    "unknown_invoice", 404, "No such rent invoice for this household.",
    "이 세대의 해당 임대료 청구서가 없습니다.")
unknown_rent_payment = _kind(
    "unknown_rent_payment", 404, "No such rent payment.", "해당 임대료 납부가 없습니다.")
unknown_policy = _kind(
    "unknown_policy", 409, "No accrual policy (or not that version) has been set.",
    "적립 정책(또는 해당 버전)이 없습니다.")
# Conflicts with the ledger's state.
complex_exists = _kind(
    "complex_exists", 409, "A complex with this code is already registered.",
    "같은 코드의 단지가 이미 등록되어 있습니다.")
household_exists = _kind(
    "household_exists", 409, "This unit is already registered in the complex.",
    "이 세대는 이미 단지에 등록되어 있습니다.")
resident_exists = _kind(
    "resident_exists", 409, "This resident is already enrolled.",
    "이미 등록된 입주민입니다.")
wallet_closed = _kind(
    "wallet_closed", 409, "The resident has moved out; the wallet is closed.",
    "입주민이 퇴거하여 지갑이 닫혔습니다.")
resident_not_in_household = _kind(
    "resident_not_in_household", 403, "The resident does not live in this household.",
    "입주민이 이 세대에 속하지 않습니다.")
seller_is_buyer = _kind(
    "seller_is_buyer", 422, "A resident cannot buy from themself.",
    "본인에게서 구매할 수 없습니다.")
seller_kind_mismatch = _kind(
    "seller_kind_mismatch", 422, "The seller kind does not match the registered seller.",
    "판매자 유형이 등록된 판매자와 다릅니다.")
points_exceed_amount = _kind(
    "points_exceed_amount", 422, "Points used cannot exceed the trade amount.",
    "사용 포인트는 거래 금액을 넘을 수 없습니다.")
insufficient_points = _kind(
    "insufficient_points", 409, "Not enough available points.", "사용 가능한 포인트가 부족합니다.")
insufficient_fund = _kind(
    "insufficient_fund", 409, "The common fund does not hold enough points.",
    "공용포인트 잔액이 부족합니다.")
trade_exists = _kind(
    "trade_exists", 409, "A trade with this id is already recorded.",
    "같은 거래 번호가 이미 기록되어 있습니다.")
trade_already_refunded = _kind(
    "trade_already_refunded", 409, "The trade has already been refunded.",
    "이미 환불된 거래입니다.")
invoice_exists = _kind(
    "invoice_exists", 409, "This invoice is already issued with different terms.",
    "이 청구서는 다른 내용으로 이미 발행되었습니다.")
invoice_exceeded = _kind(
    "invoice_exceeded", 409, "Holds on this invoice would exceed the invoice amount.",
    "이 청구서에 대한 납부 보류액이 청구 금액을 넘습니다.")
rent_payment_exists = _kind(
    "rent_payment_exists", 409, "A rent payment with this id already exists.",
    "같은 번호의 임대료 납부가 이미 있습니다.")
hold_already_settled = _kind(
    "hold_already_settled", 409, "The hold has already been settled.", "이미 정산된 보류입니다.")
hold_already_released = _kind(
    "hold_already_released", 409, "The hold has already been released.",
    "이미 해제된 보류입니다.")
return_window_open = _kind(
    "return_window_open", 409, "The trade's return window has not ended yet.",
    "거래의 반품 기간이 아직 끝나지 않았습니다.")
accrual_not_pending = _kind(
    "accrual_not_pending", 409, "The trade has no pending points.",
    "이 거래에는 적립 대기 포인트가 없습니다.")
nothing_to_expire = _kind(
    "nothing_to_expire", 409, "No points of this wallet have reached their expiry.",
    "만료 기한이 지난 포인트가 없습니다.")
hold_not_due = _kind(
    "hold_not_due", 409, "The hold's deadline has not passed yet.",
    "보류 기한이 아직 지나지 않았습니다.")
holds_pending = _kind(
    "holds_pending", 409,
    "Rent holds and open group-buy orders must be resolved before moving out.",
    "퇴거 전에 임대료 보류와 진행 중인 공동구매 주문을 정리해야 합니다.")
spend_exists = _kind(
    "spend_exists", 409, "A fund spend with this id is already recorded.",
    "같은 번호의 공용포인트 사용이 이미 기록되어 있습니다.")
payout_exists = _kind(
    "payout_exists", 409, "A payout with this id is already recorded.",
    "같은 번호의 지급이 이미 기록되어 있습니다.")
nothing_to_pay_out = _kind(
    "nothing_to_pay_out", 409, "The settlement account is empty.", "정산 계좌가 비어 있습니다.")
# Resident votes and the spends they gate (ledger.proposal).
unknown_proposal = _kind(
    "unknown_proposal", 404, "No such proposal in this complex.",
    "이 단지에 해당 안건이 없습니다.")
proposal_exists = _kind(
    "proposal_exists", 409, "A proposal with this id already exists.",
    "같은 번호의 안건이 이미 있습니다.")
invalid_voting_window = _kind(
    "invalid_voting_window", 422,
    "The voting window must close after it opens and after now, within the limits.",
    "투표 기간은 시작 이후, 현재 이후에 끝나야 하며 한도 내여야 합니다.")
voting_not_open = _kind(
    "voting_not_open", 409, "Voting on this proposal has not opened yet.",
    "이 안건의 투표가 아직 시작되지 않았습니다.")
voting_closed = _kind(
    "voting_closed", 409, "Voting on this proposal has closed.",
    "이 안건의 투표가 마감되었습니다.")
voting_not_over = _kind(
    "voting_not_over", 409, "The voting window has not closed yet.",
    "투표 기간이 아직 끝나지 않았습니다.")
already_voted = _kind(
    "already_voted", 409, "This household has already voted on the proposal.",
    "이 세대는 이미 이 안건에 투표했습니다.")
resident_not_in_complex = _kind(
    "resident_not_in_complex", 403, "The resident does not live in the proposal's complex.",
    "입주민이 이 안건의 단지에 속하지 않습니다.")
proposal_decided = _kind(
    "proposal_decided", 409, "The proposal has already been decided.",
    "이미 결정된 안건입니다.")
proposal_not_approved = _kind(
    "proposal_not_approved", 409, "The proposal cited by the spend is not approved.",
    "사용 근거 안건이 승인되지 않았습니다.")
proposal_purpose_mismatch = _kind(
    "proposal_purpose_mismatch", 422, "The spend's purpose differs from the proposal's.",
    "사용 목적이 안건의 목적과 다릅니다.")
proposal_amount_exceeded = _kind(
    "proposal_amount_exceeded", 409,
    "Spends citing this proposal would exceed its approved amount.",
    "이 안건을 근거로 한 사용액이 승인 금액을 넘습니다.")
allowance_exceeded = _kind(
    "allowance_exceeded", 409,
    "Without an approved proposal, this month's spends would exceed the complex's allowance.",
    "승인된 안건 없이 이번 달 사용액이 단지의 소액 사용 한도를 넘습니다.")
# Group buys (shopping market).
invalid_quantity = _kind(
    "invalid_quantity", 422, "A quantity must be a whole number within the group buy's limits.",
    "수량은 공동구매 한도 내의 정수여야 합니다.")
unknown_group_buy = _kind(
    "unknown_group_buy", 404, "No such group buy.", "해당 공동구매가 없습니다.")
unknown_group_buy_order = _kind(
    "unknown_group_buy_order", 404, "No such group-buy order.", "해당 공동구매 주문이 없습니다.")
group_buy_exists = _kind(
    "group_buy_exists", 409, "A group buy with this id is already open or closed.",
    "같은 번호의 공동구매가 이미 있습니다.")
order_exists = _kind(
    "order_exists", 409, "An order with this id already exists.",
    "같은 번호의 주문이 이미 있습니다.")
group_buy_closed = _kind(
    "group_buy_closed", 409, "The group buy is already closed (completed or cancelled).",
    "이미 마감된(성사 또는 취소된) 공동구매입니다.")
group_buy_deadline_passed = _kind(
    "group_buy_deadline_passed", 409, "The group buy's deadline has passed.",
    "공동구매 마감 시각이 지났습니다.")
group_buy_not_open_to_complex = _kind(
    "group_buy_not_open_to_complex", 403, "This group buy is not open to the resident's complex.",
    "이 공동구매는 입주민의 단지에 열려 있지 않습니다.")
group_buy_quantity_exceeded = _kind(
    "group_buy_quantity_exceeded", 409, "The order would take the group buy beyond its maximum.",
    "주문하면 공동구매 최대 수량을 넘습니다.")
group_buy_orders_exceeded = _kind(
    "group_buy_orders_exceeded", 409, "The group buy takes no more orders.",
    "공동구매가 더 이상 주문을 받을 수 없습니다.")
group_buy_minimum_not_reached = _kind(
    "group_buy_minimum_not_reached", 409,
    "The group buy can close before its deadline only once its minimum is reached.",
    "최소 수량에 도달해야 마감 전에 공동구매를 닫을 수 있습니다.")
order_already_cancelled = _kind(
    "order_already_cancelled", 409, "The order has already been cancelled.",
    "이미 취소된 주문입니다.")
request_id_reused = _kind(
    "request_id_reused", 409, "This request id was already used for a different request.",
    "이 요청 번호는 다른 요청에 이미 사용되었습니다.")
forbidden = _kind(
    "forbidden", 403, "This role may not do that.", "이 역할로는 할 수 없는 작업입니다.")

# Wash-trade guards (ledger.guards): trades between residents the policy version refuses.
same_household_trade = _kind(
    "same_household_trade", 409,
    "Residents of the same household cannot trade with each other.",
    "같은 세대의 입주민끼리는 거래할 수 없습니다.")
pair_trade_cap_reached = _kind(
    "pair_trade_cap_reached", 409,
    "These two residents have reached this month's limit of trades with each other.",
    "두 입주민 간의 이번 달 거래 한도에 도달했습니다.")
sharing_accrual_cap_reached = _kind(
    "sharing_accrual_cap_reached", 409,
    "This trade would take the buyer past this month's limit of sharing-market points.",
    "이 거래로 구매자의 이번 달 공유마켓 적립 한도를 넘게 됩니다.")
GUARD_CODES = (same_household_trade, pair_trade_cap_reached, sharing_accrual_cap_reached)
"""The codes by which a wash-trade guard refuses a trade (counted by the API's metrics)."""


class DomainError(Exception):
    """A command was rejected; nothing changed."""

    def __init__(self, code: str, detail: str = "", **context: Any) -> None:
        assert code in _KINDS, f"unregistered error code {code}"
        self.code = code
        self.kind = _KINDS[code]
        self.detail = detail
        self.context = context
        super().__init__(f"{code}: {detail or self.kind.english}")

    def message(self, language: str = "ko") -> str:
        return self.kind.korean if language == "ko" else self.kind.english


class DatabaseUnavailable(Exception):  # noqa: N818  (named for what the caller is told)
    """The database did not answer in time: nothing was decided for this command.

    Not a rejection: retrying the same request (the same request id) is safe and is
    what the caller should do; the API answers 503 `database_unavailable` with
    Retry-After.
    """

    code = "database_unavailable"


def error_kind(code: str) -> ErrorKind:
    return _KINDS[code]


def error_kinds() -> list[ErrorKind]:
    return list(_KINDS.values())
