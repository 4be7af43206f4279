"""docker-compose.yml cannot run here; check what can be checked without Docker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.settings import ApiSettings
from cli import relay as relay_cli
from ledger import database

compose_path = Path(__file__).resolve().parent.parent / "docker-compose.yml"
dockerfile_path = compose_path.parent / "Dockerfile"

# Services running third-party images configure those images; their variables are not ours.
third_party_services = {"postgres", "kafka"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(compose_path.read_text())
    assert isinstance(document, dict)
    return document


def settings_names() -> set[str]:
    """Every environment name the ledger's settings code reads."""
    names: set[str] = set()
    prefix = str(ApiSettings.model_config.get("env_prefix", ""))
    for field_name, field in ApiSettings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
        else:
            choices = getattr(alias, "choices", [alias])
            names |= {str(choice).upper() for choice in choices}
    names |= {database.DATABASE_URL_VARIABLE, database.DATA_DIR_VARIABLE}
    names |= set(relay_cli.ENVIRONMENT_NAMES)
    return names


def environment(service: dict[str, Any]) -> dict[str, Any]:
    value = service.get("environment", {})
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    assert isinstance(value, dict)
    return value


def test_compose_parses_with_the_five_services(compose: dict[str, Any]) -> None:
    """The file is YAML with PostgreSQL, Kafka, the API, the projections and the relay."""
    assert set(compose["services"]) == {"postgres", "kafka", "api", "projections", "relay"}
    assert compose["services"]["postgres"]["image"] == "postgres:16"
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in environment(compose["services"]["kafka"])["KAFKA_PROCESS_ROLES"]


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    """Each service says how to tell it is healthy."""
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"


def test_ledger_services_run_the_ledger_command(compose: dict[str, Any]) -> None:
    """The API, projection runner and relay run `ledger serve|project|relay` from one image."""
    services = compose["services"]
    assert services["api"]["command"] == ["serve", "--no-projections"]
    assert services["projections"]["command"] == ["project"]
    assert services["relay"]["command"] == ["relay"]
    assert 'ENTRYPOINT ["ledger"]' in dockerfile_path.read_text()
    assert "FROM python:3.11-slim" in dockerfile_path.read_text()


def test_every_environment_name_exists_in_the_settings_code(compose: dict[str, Any]) -> None:
    """No LEDGER_* or KAFKA_* name in our services is unknown to the settings code."""
    known = settings_names()
    used = set()
    for name, service in compose["services"].items():
        if name in third_party_services:
            continue
        for variable in environment(service):
            if re.match(r"^(LEDGER|KAFKA)_", variable):
                used.add(variable)
                assert variable in known, f"{name}: {variable} is read by no settings code"
    assert {"LEDGER_DATABASE_URL", "LEDGER_SCHEMA", "KAFKA_BOOTSTRAP_SERVERS",
            "LEDGER_JWT_PUBLIC_KEYS", "LEDGER_RELAY_METRICS_PORT"} <= used


def test_the_relay_stops_gracefully_and_publishes_its_metrics(compose: dict[str, Any]) -> None:
    """Compose stops the relay with SIGTERM and its healthcheck scrapes the metrics port."""
    relay = compose["services"]["relay"]
    assert relay.get("stop_signal", "SIGTERM") == "SIGTERM"
    port = str(environment(relay)["LEDGER_RELAY_METRICS_PORT"])
    assert f":{port}/metrics" in " ".join(relay["healthcheck"]["test"])
