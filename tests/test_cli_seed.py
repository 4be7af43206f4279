"""`ledger seed` and `ledger summary`, as a newcomer runs them."""

from __future__ import annotations

import pytest

from cli.main import main


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
