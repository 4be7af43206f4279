"""docker-compose.yml cannot run here; check what can be checked without Docker."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from api.auth import TokenVerifier
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
            "LEDGER_JWT_PUBLIC_KEYS", "LEDGER_JWT_JWKS_URL", "LEDGER_JWT_DEV_KEY_ALLOWED",
            "LEDGER_RELAY_METRICS_PORT"} <= used


def test_the_relay_stops_gracefully_and_publishes_its_metrics(compose: dict[str, Any]) -> None:
    """Compose stops the relay with SIGTERM and its healthcheck scrapes the metrics port."""
    relay = compose["services"]["relay"]
    assert relay.get("stop_signal", "SIGTERM") == "SIGTERM"
    port = str(environment(relay)["LEDGER_RELAY_METRICS_PORT"])
    assert f":{port}/metrics" in " ".join(relay["healthcheck"]["test"])


_interpolation = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: object, shell: dict[str, str]) -> str:
    """What compose makes of a value, given the variables of the shell that runs it
    (`${NAME}`, `${NAME-default}`, `${NAME:-default}`, `${NAME:?error}`)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, argument = match["name"], match["op"], match["arg"]
        found = shell.get(name)
        missing = found is None or (found == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("?") and missing:
            msg = f"compose refuses to start: {name} {argument}"
            raise ValueError(msg)
        if op is not None and op.endswith("-") and missing:
            return argument
        return found or ""

    return _interpolation.sub(substitute, str(value))


def api_settings_under_compose(compose: dict[str, Any], shell: dict[str, str],
                               monkeypatch: pytest.MonkeyPatch) -> ApiSettings:
    """The API's settings as the api service would read them, from that shell."""
    for name in list(os.environ):
        if re.match(r"^(LEDGER|KAFKA)_", name):
            monkeypatch.delenv(name)
    for name, value in environment(compose["services"]["api"]).items():
        monkeypatch.setenv(name, interpolate(value, shell))
    return ApiSettings()


def test_the_api_never_falls_back_to_the_development_key(compose: dict[str, Any]) -> None:
    """The api service forbids the development key, has no development key directory or
    volume, and takes no key by default: keys come from the operator's shell or mount."""
    api = compose["services"]["api"]
    variables = environment(api)
    assert str(variables["LEDGER_JWT_DEV_KEY_ALLOWED"]).lower() == "false"
    assert "LEDGER_DEV_KEY_DIR" not in variables
    assert "dev-keys" not in compose.get("volumes", {})
    assert not any("dev-keys" in str(volume) for volume in api.get("volumes", []))
    for name in ("LEDGER_JWT_JWKS_URL", "LEDGER_JWT_PUBLIC_KEYS"):
        assert interpolate(variables[name], {}) == "", f"{name} has a default key"
    assert any(str(volume).endswith(":/etc/ledger/jwt:ro") for volume in api["volumes"]), \
        "public keys are mounted read-only"


def test_the_api_refuses_to_start_without_token_keys(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """From a shell that sets no key, the api service's settings make the verifier, and
    so the API's start-up, fail; a JWKS URL or a public key makes it start."""
    settings = api_settings_under_compose(compose, {}, monkeypatch)
    with pytest.raises(ValueError, match="LEDGER_JWT_JWKS_URL or LEDGER_JWT_PUBLIC_KEYS"):
        TokenVerifier.from_settings(settings)

    settings = api_settings_under_compose(
        compose, {"LEDGER_JWT_JWKS_URL": "https://idp.example/.well-known/jwks.json"},
        monkeypatch)
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.jwks is not None
    assert verifier.jwks.url == "https://idp.example/.well-known/jwks.json"
    assert verifier.public_keys == ()

    mounted_key = tmp_path / "idp-2026.pem"  # Stands in for /etc/ledger/jwt/idp-2026.pem.
    mounted_key.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo))
    settings = api_settings_under_compose(
        compose, {"LEDGER_JWT_PUBLIC_KEYS": str(mounted_key)}, monkeypatch)
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.jwks is None
    assert len(verifier.public_keys) == 1
