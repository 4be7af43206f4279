"""`ledger seed` and `ledger summary`, as a newcomer runs them."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from cli.main import main
from ledger.application import now
from ledger.events import KST
from seeding.seed import seed
from world import World


def test_seed_prints_events_points_and_a_passing_conservation_check(
        database_url: str, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A small seed with a month of activity ends with a summary whose check passes."""
    code = main(["--database-url", database_url, "--schema", schema, "--quiet", "seed",
                 "--complexes", "2", "--households", "30", "--months", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "events written:" in out
    for kind in ("wallet", "fund", "issuance", "rent_clearing", "fund_spending"):
        assert f"  {kind}" in out
    assert "conservation: sum of all accounts = 0 — OK" in out
    refused = re.search(r"wash trades refused by the guards: same_household_trade (\d+), "
                        r"pair_trade_cap_reached (\d+), sharing_accrual_cap_reached (\d+)", out)
    assert refused is not None, out
    assert all(int(count) >= 1 for count in refused.groups())


def test_seeded_months_end_today(world: World) -> None:
    """The last seeded month ends with yesterday (KST): a new user's demo shows recent
    activity, and nothing is dated in the future."""
    summary = seed(world.ledger, complexes=1, households=12, months=1, progress=False)
    assert summary.counts["record_trade"] > 0
    today = now().astimezone(KST).date()
    moments = [event.occurred_at.astimezone(KST).date() for event in world.all_events()
               if type(event).__qualname__ == "Trade.Recorded"]
    assert max(moments) < today
    assert max(moments) >= today - timedelta(days=14)
    assert min(moments) >= today - timedelta(days=31)


def test_seeding_again_adds_to_the_ledger(database_url: str, schema: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A second seed adds new complexes after the existing ones instead of failing."""
    arguments = ["--database-url", database_url, "--schema", schema, "--quiet", "seed",
                 "--complexes", "1", "--households", "5", "--months", "0"]
    assert main(arguments) == 0
    assert main(arguments) == 0
    capsys.readouterr()
    assert main(["--database-url", database_url, "--schema", schema, "--quiet",
                 "summary"]) == 0
    assert "OK" in capsys.readouterr().out


def test_seed_rejects_nonsense_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    """Sizes out of range are refused with a clear message before anything runs."""
    with pytest.raises(SystemExit) as exited:
        main(["seed", "--households", "0"])
    assert exited.value.code == 2
    assert "must be between 1 and 2000000" in capsys.readouterr().err
