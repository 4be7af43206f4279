"""Bearer-token authentication, seen from a client of a small protected app."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from api.auth import (
    AuthenticationError,
    Principal,
    Role,
    TokenVerifier,
    authentication_error_handler,
    ensure_dev_keypair,
    get_principal,
    mint_token,
)
from api.settings import ApiSettings
from ledger import limits

COMPLEX_ID = uuid.UUID("5b0c1f3e-2a44-4d7e-9a51-0c7d1e2f3a4b")


def make_settings(tmp_path: Path, **changes: Any) -> ApiSettings:
    # Explicit values win over the environment, so a developer's variables cannot leak in.
    values: dict[str, Any] = {"dev_key_dir": tmp_path / "dev-keys", "jwt_public_keys": (),
                              "jwt_jwks_url": "", "jwt_dev_key_allowed": True}
    values.update(changes)
    return ApiSettings(**values)


def make_client(settings: ApiSettings) -> TestClient:
    app = FastAPI()
    app.state.token_verifier = TokenVerifier.from_settings(settings)
    app.add_exception_handler(AuthenticationError, authentication_error_handler)

    @app.get("/whoami")
    def whoami(principal: Principal = Depends(get_principal)) -> dict[str, str | None]:  # noqa: B008
        return {
            "subject": str(principal.subject),
            "role": principal.role.value,
            "complex_id": str(principal.complex_id) if principal.complex_id else None,
            "token_id": principal.token_id,
        }

    return TestClient(app)


def claims_for(settings: ApiSettings, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "role": "resident",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def sign_with_dev_key(settings: ApiSettings, claims: dict[str, Any]) -> str:
    private_path, _ = ensure_dev_keypair(settings.dev_key_dir)
    private_key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    return jwt.encode(claims, private_key, algorithm="EdDSA")


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A token built without PyJWT, which refuses to make these forgeries itself."""
    signing_input = (
        f"{base64url(json.dumps(header).encode())}.{base64url(json.dumps(claims).encode())}"
    )
    if secret is None:
        return f"{signing_input}."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64url(signature)}"


def get_whoami(client: TestClient, token: str) -> Any:
    return client.get("/whoami", headers={"Authorization": f"Bearer {token}"})


def assert_unauthorized(response: Any, code: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["code"] == code
    assert body["status"] == 401
    assert body["title"]
    assert body["detail"]
    assert body["type"].endswith(code)


@pytest.fixture
def settings(tmp_path: Path) -> ApiSettings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: ApiSettings) -> TestClient:
    return make_client(settings)


@pytest.fixture(scope="module")
def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_public_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


# The good path.


@pytest.mark.parametrize("role", list(Role))
def test_a_minted_token_names_its_caller_for_every_role(
    settings: ApiSettings, client: TestClient, role: Role
) -> None:
    """A development token for any role is accepted and names its subject, role and complex."""
    subject = uuid.uuid4()
    token = mint_token(role, subject, COMPLEX_ID, settings=settings)

    response = get_whoami(client, token)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["subject"] == str(subject)
    assert body["role"] == role.value
    assert body["complex_id"] == str(COMPLEX_ID)
    assert uuid.UUID(body["token_id"])


def test_a_resident_token_may_omit_the_complex(settings: ApiSettings, client: TestClient) -> None:
    """A resident token without a complex id is accepted with no complex."""
    token = mint_token(Role.RESIDENT, uuid.uuid4(), settings=settings)

    response = get_whoami(client, token)

    assert response.status_code == 200
    assert response.json()["complex_id"] is None


def test_the_bearer_scheme_is_case_insensitive(settings: ApiSettings, client: TestClient) -> None:
    """A client that writes `bearer` in lower case is still understood."""
    token = mint_token(Role.AUDITOR, uuid.uuid4(), settings=settings)

    response = client.get("/whoami", headers={"Authorization": f"bearer {token}"})

    assert response.status_code == 200


def test_any_of_the_configured_keys_may_sign(tmp_path: Path) -> None:
    """With two trusted keys configured (a rotation), a token signed by the second is accepted."""
    old_key = ed25519.Ed25519PrivateKey.generate()
    new_key = ed25519.Ed25519PrivateKey.generate()
    old_key_path = tmp_path / "old.pem"
    old_key_path.write_bytes(
        old_key.public_key().public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    new_key_pem = (
        new_key.public_key()
        .public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )
    settings = make_settings(tmp_path, jwt_public_keys=f"{old_key_path},{new_key_pem}")
    token = jwt.encode(claims_for(settings), new_key, algorithm="EdDSA")

    response = get_whoami(make_client(settings), token)

    assert response.status_code == 200, response.text


def test_an_rs256_deployment_accepts_tokens_signed_by_its_rsa_key(
    tmp_path: Path, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    """Configured for RS256 with an RSA public key, the API accepts that key's tokens."""
    settings = make_settings(
        tmp_path,
        jwt_algorithm="RS256",
        jwt_public_keys=json.dumps([rsa_public_pem(rsa_private_key).decode()]),
    )
    token = jwt.encode(claims_for(settings, role="billing"), rsa_private_key, algorithm="RS256")

    response = get_whoami(make_client(settings), token)

    assert response.status_code == 200, response.text
    assert response.json()["role"] == "billing"


# Refusals.


def test_no_authorization_header_is_token_missing(client: TestClient) -> None:
    """A request without credentials is asked to authenticate, with no error in the challenge."""
    response = client.get("/whoami")

    assert_unauthorized(response, "token_missing")
    assert response.headers["www-authenticate"] == "Bearer"


def test_another_scheme_is_token_missing(client: TestClient) -> None:
    """Basic credentials are not a bearer token."""
    response = client.get("/whoami", headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert_unauthorized(response, "token_missing")


def test_an_unsigned_token_is_refused(settings: ApiSettings, client: TestClient) -> None:
    """A token with `alg: none` is refused, whatever its claims say."""
    token = hand_made_token({"alg": "none", "typ": "JWT"}, claims_for(settings), secret=None)

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_invalid")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_a_token_signed_by_an_untrusted_key_is_refused(
    settings: ApiSettings, client: TestClient
) -> None:
    """A well-formed EdDSA token signed by some other Ed25519 key is refused."""
    stranger_key = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode(claims_for(settings), stranger_key, algorithm="EdDSA")

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_invalid")


def test_an_expired_token_is_token_expired(settings: ApiSettings, client: TestClient) -> None:
    """A token that expired a minute ago (beyond the clock leeway) is refused as expired."""
    now = int(time.time())
    claims = claims_for(settings, iat=now - 3600, nbf=now - 3600, exp=now - 60)
    token = sign_with_dev_key(settings, claims)

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_expired")


def test_a_token_verified_before_is_remembered_only_until_it_expires(
    settings: ApiSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token the verifier remembers as verified answers from memory until its `exp` plus
    the clock leeway, the instant PyJWT starts refusing it; then it takes the full path
    (where PyJWT's own clock decides, `token_expired` as the test above shows)."""
    verifier = TokenVerifier.from_settings(settings)
    now = int(time.time())
    token = sign_with_dev_key(settings, claims_for(settings, iat=now, nbf=now, exp=now + 60))
    principal = verifier.verify(token)
    assert verifier.cached(token) == principal

    leeway = limits.clock_leeway_seconds
    monkeypatch.setattr(time, "time", lambda: now + 60 + leeway - 0.5)
    assert verifier.verify(token) == principal
    monkeypatch.setattr(time, "time", lambda: now + 60 + leeway)
    assert verifier.cached(token) is None


def test_the_verified_tokens_remembered_are_bounded(
    settings: ApiSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond `verified_tokens_max`, the oldest token is forgotten (and verified in full
    when it comes back)."""
    monkeypatch.setattr(limits, "verified_tokens_max", 3)
    verifier = TokenVerifier.from_settings(settings)
    tokens = [mint_token(Role.RESIDENT, uuid.uuid4(), settings=settings) for _ in range(4)]
    for token in tokens:
        verifier.verify(token)
    assert verifier.cached(tokens[0]) is None
    assert all(verifier.cached(token) is not None for token in tokens[1:])
    assert verifier.verify(tokens[0]).subject == verifier.verify(tokens[0]).subject


def test_an_expired_token_from_an_untrusted_key_is_not_called_expired(
    settings: ApiSettings, client: TestClient
) -> None:
    """Only a trusted signature earns the more specific `token_expired` answer."""
    now = int(time.time())
    claims = claims_for(settings, iat=now - 3600, nbf=now - 3600, exp=now - 60)
    token = jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA")

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_invalid")


def test_a_token_for_another_audience_is_refused(settings: ApiSettings, client: TestClient) -> None:
    """A token meant for another service is refused."""
    token = sign_with_dev_key(settings, claims_for(settings, aud="billing-api"))

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_invalid")


def test_a_token_from_another_issuer_is_refused(settings: ApiSettings, client: TestClient) -> None:
    """A token issued by an issuer other than the configured one is refused."""
    token = sign_with_dev_key(settings, claims_for(settings, iss="https://evil.example/"))

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_invalid")


def test_hs256_signed_with_the_ed25519_public_key_is_refused(
    settings: ApiSettings, client: TestClient
) -> None:
    """An HS256 token using the dev public key as HMAC secret (key confusion) is refused."""
    _, public_path = ensure_dev_keypair(settings.dev_key_dir)
    token = hand_made_token(
        {"alg": "HS256", "typ": "JWT"}, claims_for(settings), secret=public_path.read_bytes()
    )

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_invalid")


def test_hs256_signed_with_the_rsa_public_key_is_refused_by_an_rs256_deployment(
    tmp_path: Path, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    """Configured for RS256, an HS256 token using the RSA public PEM as HMAC secret is refused."""
    public_pem = rsa_public_pem(rsa_private_key)
    settings = make_settings(tmp_path, jwt_algorithm="RS256", jwt_public_keys=public_pem.decode())
    token = hand_made_token({"alg": "HS256", "typ": "JWT"}, claims_for(settings), secret=public_pem)

    response = get_whoami(make_client(settings), token)

    assert_unauthorized(response, "token_invalid")


def test_a_token_with_an_unknown_role_is_refused(settings: ApiSettings, client: TestClient) -> None:
    """A correctly signed token naming a role the ledger does not know is refused."""
    token = sign_with_dev_key(settings, claims_for(settings, role="superuser"))

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_invalid")


def test_a_token_without_a_role_is_refused(settings: ApiSettings, client: TestClient) -> None:
    """A correctly signed token with no role claim is refused."""
    claims = claims_for(settings)
    del claims["role"]
    token = sign_with_dev_key(settings, claims)

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_invalid")


@pytest.mark.parametrize("role", ["manager", "coordinator"])
def test_a_complex_staff_token_without_a_complex_is_refused(
    settings: ApiSettings, client: TestClient, role: str
) -> None:
    """A manager or coordinator token that does not say which complex is refused."""
    token = sign_with_dev_key(settings, claims_for(settings, role=role))

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_invalid")


@pytest.mark.parametrize(
    ("claim", "value"), [("sub", "resident-42"), ("complex_id", "complex-7"), ("sub", 42)]
)
def test_ids_that_are_not_uuids_are_refused(
    settings: ApiSettings, client: TestClient, claim: str, value: object
) -> None:
    """A signed token whose subject or complex id is not a UUID is refused."""
    token = sign_with_dev_key(settings, claims_for(settings, **{claim: value}))

    response = get_whoami(client, token)

    assert_unauthorized(response, "token_invalid")


@pytest.mark.parametrize(
    "token", ["garbage", "a.b.c", "", "Bearer", "eyJhbGciOiJFZERTQSJ9.e30.", "x" * 10_000]
)
def test_garbage_is_refused(client: TestClient, token: str) -> None:
    """Anything that is not a JWT is refused as an invalid token."""
    response = client.get("/whoami", headers={"Authorization": f"Bearer {token}"})

    assert_unauthorized(response, "token_invalid")


# Development keys and settings.


def test_the_dev_key_pair_is_created_once_and_the_private_key_is_private(tmp_path: Path) -> None:
    """The first call creates the key pair with a 0600 private key; later calls reuse it."""
    private_path, public_path = ensure_dev_keypair(tmp_path / "keys")
    first_private_pem = private_path.read_bytes()

    again = ensure_dev_keypair(tmp_path / "keys")

    assert again == (private_path, public_path)
    assert private_path.read_bytes() == first_private_pem
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert b"PUBLIC KEY" in public_path.read_bytes()


def test_a_token_minted_before_a_restart_is_still_accepted(tmp_path: Path) -> None:
    """A new verifier over the same dev key directory accepts tokens minted earlier."""
    settings = make_settings(tmp_path)
    token = mint_token(Role.MERCHANT, uuid.uuid4(), settings=settings)

    response = get_whoami(make_client(settings), token)

    assert response.status_code == 200


def test_minting_a_manager_token_without_a_complex_is_a_programmer_error(
    settings: ApiSettings,
) -> None:
    """`mint_token` will not make a manager token that the verifier would refuse."""
    with pytest.raises(ValueError, match="complex_id"):
        mint_token(Role.MANAGER, uuid.uuid4(), settings=settings)


def test_an_rs256_deployment_without_keys_does_not_start(tmp_path: Path) -> None:
    """RS256 with no configured public keys fails at start-up, not at the first request."""
    with pytest.raises(ValueError, match="LEDGER_JWT_PUBLIC_KEYS"):
        TokenVerifier.from_settings(make_settings(tmp_path, jwt_algorithm="RS256"))


def test_a_key_of_the_wrong_kind_does_not_start(
    tmp_path: Path, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    """An RSA key configured for EdDSA fails at start-up."""
    settings = make_settings(tmp_path, jwt_public_keys=rsa_public_pem(rsa_private_key).decode())

    with pytest.raises(ValueError, match="cannot verify EdDSA"):
        TokenVerifier.from_settings(settings)


def test_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`LEDGER_*` variables, and `KAFKA_BOOTSTRAP_SERVERS` without prefix, set the fields."""
    monkeypatch.setenv("LEDGER_JWT_AUDIENCE", "ledger-staging")
    monkeypatch.setenv("LEDGER_JWT_ALGORITHM", "RS256")
    monkeypatch.setenv("LEDGER_JWT_PUBLIC_KEYS", " /keys/a.pem, /keys/b.pem ,")
    monkeypatch.setenv("LEDGER_PORT", "9100")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")

    settings = ApiSettings()

    assert settings.jwt_audience == "ledger-staging"
    assert settings.jwt_algorithm == "RS256"
    assert settings.jwt_public_keys == ("/keys/a.pem", "/keys/b.pem")
    assert settings.port == 9100
    assert settings.kafka_bootstrap_servers == "broker-1:9092,broker-2:9092"


def test_public_keys_may_be_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """`LEDGER_JWT_PUBLIC_KEYS` also accepts a JSON array of strings."""
    monkeypatch.setenv("LEDGER_JWT_PUBLIC_KEYS", '["/keys/a.pem", "/keys/b.pem"]')

    assert ApiSettings().jwt_public_keys == ("/keys/a.pem", "/keys/b.pem")


@pytest.mark.parametrize("algorithm", ["HS256", "none", "ES256"])
def test_only_eddsa_and_rs256_may_be_configured(
    monkeypatch: pytest.MonkeyPatch, algorithm: str
) -> None:
    """Any other signing algorithm is a configuration error."""
    monkeypatch.setenv("LEDGER_JWT_ALGORITHM", algorithm)

    with pytest.raises(ValueError, match="jwt_algorithm"):
        ApiSettings()
