"""`ledger import` of resident votes: a proposal, its ballots, its decision and the spend
it approves, by complex and in file order, as if sent one by one."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from cli.main import main
from ledger.complex import Complex, complex_id_for
from ledger.household import household_id_for
from ledger.proposal import Proposal, proposal_aggregate_id
from world import World

AT = "2026-03-02T10:00:00+09:00"


def _line(request_id: str, command: str, body: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"request_id": request_id, "command": command,
                       "occurred_at": extra.pop("occurred_at", AT), "body": body, **extra})


def test_a_vote_imports_and_decides(world: World, tmp_path: Path) -> None:
    """Five households, a trade to fund the complex, a proposal, four ballots (one by a
    coordinator), the sweeper's decision and a spend citing it; a second ballot of a
    household is refused already_voted."""
    complex_id = complex_id_for("IV-1")
    lines = [
        _line("policy", "set_accrual_policy", {"rates": [
            {"market": "sharing", "seller_kind": "resident", "personal_bps": 300,
             "common_bps": 1000}]}),
        _line("complex", "register_complex",
              {"code": "IV-1", "complex_name": "Import votes", "region": "Hwaseong"})]
    residents = []
    for unit in range(5):
        household = household_id_for(complex_id, f"u-{unit}")
        resident = str(uuid.uuid4())
        residents.append(resident)
        lines += [_line(f"h-{unit}", "register_household",
                        {"complex_id": str(complex_id), "unit": f"u-{unit}"}),
                  _line(f"e-{unit}", "enrol_resident",
                        {"household_id": str(household), "consent_ref": "paper",
                         "resident_id": resident}, actor_id=resident, role="resident")]
    lines.append(_line("trade", "record_trade", {
        "trade_id": "T-1", "market": "sharing", "category": "childcare",
        "seller_id": residents[0], "seller_kind": "resident", "buyer_id": residents[1],
        "amount_won": 50_000, "points_used_won": 0}, role="platform"))
    lines.append(_line("open", "open_proposal", {
        "complex_id": str(complex_id), "proposal_id": "IP-1", "purpose": "event",
        "title": "Spring fair", "amount_won": 4_000,
        "voting_closes_at": "2026-03-09T18:00:00+09:00"}, role="manager"))
    for index, resident in enumerate(residents[:3]):
        lines.append(_line(f"ballot-{index}", "cast_ballot", {
            "proposal_id": "IP-1", "resident_id": resident, "choice": "yes"},
            actor_id=resident, role="resident", occurred_at="2026-03-03T10:00:00+09:00"))
    coordinator = str(uuid.uuid4())
    lines.append(_line("ballot-c", "cast_ballot", {
        "proposal_id": "IP-1", "resident_id": residents[3], "choice": "no",
        "consent_ref": "form-9"}, actor_id=coordinator, role="coordinator",
        on_behalf_of=residents[3], occurred_at="2026-03-04T10:00:00+09:00"))
    lines.append(_line("ballot-again", "cast_ballot", {
        "proposal_id": "IP-1", "resident_id": residents[0], "choice": "no"},
        actor_id=residents[0], role="resident", occurred_at="2026-03-04T11:00:00+09:00"))
    lines.append(_line("close", "close_proposal", {
        "proposal_id": "IP-1", "now": "2026-03-09T18:01:00+09:00"},
        occurred_at="2026-03-09T18:01:00+09:00"))
    lines.append(_line("spend", "spend_fund", {
        "complex_id": str(complex_id), "spend_id": "IS-1", "purpose": "event",
        "amount_won": 4_000, "proposal_id": "IP-1"}, role="manager",
        occurred_at="2026-03-20T10:00:00+09:00"))
    path = tmp_path / "votes.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    assert main(["--database-url", world.database_url, "--schema", world.schema, "--quiet",
                 "import", str(path), "--workers", "2"]) == 1  # one line refused
    rejects = [json.loads(text) for text in
               path.with_name(path.name + ".rejects.jsonl").read_text().splitlines()]
    assert [entry["code"] for entry in rejects] == ["already_voted"]
    proposal = world.ledger.snapshot(Proposal, proposal_aggregate_id("IP-1"))
    assert proposal is not None
    assert (proposal.state, proposal.yes_count, proposal.no_count, proposal.households_count,
            proposal.spent_won) == ("approved", 3, 1, 5, 4_000)
    fund = world.ledger.snapshot(Complex, complex_id)
    assert fund is not None and fund.balance_won == 1_000
