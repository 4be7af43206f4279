"""Token keys from the identity provider's JWKS URL, against a real JWKS server.

Each test serves a JWKS document over HTTP on a loopback port from a thread of its
own, with keys generated here, and counts the requests that reach it. Cache expiry
and the refetch interval run on a clock the test moves, so no test sleeps for them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from api import problems
from api.app import create_app
from api.auth import (
    AuthenticationError,
    Principal,
    TokenVerifier,
    authentication_error_handler,
    get_principal,
    identity_provider_unavailable_handler,
)
from api.jwks import IdentityProviderUnavailable, JwksKeys
from api.settings import ApiSettings
from ledger import limits
from test_auth import hand_made_token

ISSUER = "https://idp.naechingu.example/"
AUDIENCE = "ledger-api"
CACHE_SECONDS = 300.0
REFETCH_SECONDS_MIN = 30.0
HANG_GUARD_SECONDS = 10.0
"""How long a test waits for something that should happen at once, before it fails."""


# A JWKS server on a loopback port.


class JwksServer:
    """Serves `document` at `url`; counts the requests; `gate` holds answers back."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.status = 200
        self.raw_body: bytes | None = None
        self.redirect_to: str | None = None
        self.requests = 0
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests += 1
                server.arrived.set()
                server.gate.wait(HANG_GUARD_SECONDS * 3)
                if server.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.end_headers()
                    return
                body = (server.raw_body if server.raw_body is not None
                        else json.dumps(server.document).encode())
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.running = True

    def publish(self, *keys: dict[str, Any]) -> None:
        self.document = {"keys": list(keys)}

    def stop(self) -> None:
        """Down: the port refuses connections from now on."""
        if self.running:
            self.gate.set()
            self.http.shutdown()
            self.http.server_close()
            self.running = False


@pytest.fixture
def server() -> Iterator[JwksServer]:
    jwks_server = JwksServer()
    yield jwks_server
    jwks_server.stop()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# Keys and tokens.


class SigningKey:
    """A private key of the identity provider, its kid, and its public JWK."""

    def __init__(self, kid: str, algorithm: str = "EdDSA") -> None:
        self.kid = kid
        self.algorithm = algorithm
        self.private_key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
        if algorithm == "EdDSA":
            self.private_key = ed25519.Ed25519PrivateKey.generate()
            public_jwk = OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        else:
            self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public_jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        self.jwk: dict[str, Any] = {**public_jwk, "kid": kid, "use": "sig", "alg": algorithm}

    def public_pem(self) -> str:
        return self.private_key.public_key().public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        ).decode()

    def token(self, kid: str | None = "", **changes: Any) -> str:
        """A resident's token signed by this key; `kid` defaults to this key's own."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "iat": now,
            "nbf": now, "exp": now + 600, "jti": str(uuid.uuid4()), "role": "resident",
        }
        claims.update(changes)
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey("rsa-1", "RS256")


def make_verifier(server: JwksServer, clock: Clock, *, algorithm: Any = "EdDSA",
                  fetch_timeout_seconds: float = 2.0, **changes: Any) -> TokenVerifier:
    jwks = JwksKeys(server.url, algorithm=algorithm, cache_seconds=CACHE_SECONDS,
                    refetch_seconds_min=REFETCH_SECONDS_MIN,
                    fetch_timeout_seconds=fetch_timeout_seconds, clock=clock)
    return TokenVerifier(algorithm=algorithm, issuer=ISSUER, audience=AUDIENCE, jwks=jwks,
                         **changes)


def make_app(verifier: TokenVerifier) -> FastAPI:
    """A small protected app with the service's own problem handlers."""
    app = FastAPI()
    app.state.token_verifier = verifier
    problems.install(app)

    # A sync dependency and route, like the service's: FastAPI runs them on its thread pool.
    @app.get("/whoami")
    def whoami(principal: Principal = Depends(get_principal)) -> dict[str, str]:  # noqa: B008
        return {"subject": str(principal.subject), "role": principal.role.value}

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    return app


def get_whoami(client: TestClient, token: str) -> httpx.Response:
    return client.get("/whoami", headers={"Authorization": f"Bearer {token}"})


def accepted(verifier: TokenVerifier, token: str) -> bool:
    """Whether the verifier accepts the token; a refusal must be `token_invalid`."""
    try:
        verifier.verify(token)
    except AuthenticationError as error:
        code = error.code
    else:
        return True
    assert code == "token_invalid"
    return False


def assert_invalid(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "token_invalid"


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# Accepting.


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256"])
def test_a_token_signed_by_a_jwks_key_is_accepted(
    server: JwksServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    rsa_key: SigningKey, algorithm: str,
) -> None:
    """Configured through LEDGER_JWT_JWKS_URL, the API accepts a token whose kid names a
    published key, fetching the document once and answering later tokens from the cache."""
    key = rsa_key if algorithm == "RS256" else SigningKey("ed-1")
    server.publish(key.jwk)
    monkeypatch.setenv("LEDGER_JWT_JWKS_URL", server.url)
    monkeypatch.setenv("LEDGER_JWT_ALGORITHM", algorithm)
    monkeypatch.setenv("LEDGER_JWT_DEV_KEY_ALLOWED", "false")
    settings = ApiSettings(jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                           dev_key_dir=tmp_path / "dev-keys", jwt_public_keys=())
    client = TestClient(make_app(TokenVerifier.from_settings(settings)))

    first = get_whoami(client, key.token())
    second = get_whoami(client, key.token(role="billing"))

    assert first.status_code == 200, first.text
    assert second.json()["role"] == "billing"
    assert server.requests == 1
    assert not (tmp_path / "dev-keys").exists()


def test_a_rotated_key_is_fetched_once_and_a_removed_key_stops_after_cache_expiry(
    server: JwksServer,
) -> None:
    """The identity provider adds kid 2: its token is accepted after exactly one refetch.
    It then removes kid 1: kid 1's tokens verify until the cache expires, then not."""
    clock = Clock()
    old, new = SigningKey("2026-01"), SigningKey("2026-02")
    server.publish(old.jwk)
    verifier = make_verifier(server, clock)
    assert accepted(verifier, old.token())
    assert server.requests == 1

    clock.advance(REFETCH_SECONDS_MIN)
    server.publish(old.jwk, new.jwk)
    assert accepted(verifier, new.token())
    assert server.requests == 2
    assert accepted(verifier, old.token())
    assert accepted(verifier, new.token())
    assert server.requests == 2

    server.publish(new.jwk)
    clock.advance(CACHE_SECONDS - 1)
    assert accepted(verifier, old.token()), "fresh keys are not fetched again"
    assert server.requests == 2
    clock.advance(1)
    assert not accepted(verifier, old.token())
    assert server.requests == 3
    assert accepted(verifier, new.token())
    assert server.requests == 3


def test_a_token_verified_before_stops_verifying_once_its_key_is_removed(
    server: JwksServer,
) -> None:
    """The very same token, remembered as verified, is refused after the identity provider
    removed its key and the cache expired: the verified-token cache never outlives a key."""
    clock = Clock()
    old, new = SigningKey("2026-01"), SigningKey("2026-02")
    server.publish(old.jwk, new.jwk)
    verifier = make_verifier(server, clock)
    token = old.token()
    assert accepted(verifier, token)
    assert verifier.cached(token) is not None

    server.publish(new.jwk)
    clock.advance(CACHE_SECONDS - 1)
    assert accepted(verifier, token), "fresh keys are not fetched again"
    assert server.requests == 1
    clock.advance(1)
    assert verifier.cached(token) is None, "stale keys send the token to a full check"
    assert not accepted(verifier, token)
    assert server.requests == 2
    assert verifier.cached(token) is None


def test_a_new_kid_inside_the_refetch_interval_waits_for_the_interval(server: JwksServer) -> None:
    """Right after a fetch, a kid the cache lacks is refused without a fetch; once the
    interval has passed, one refetch finds it."""
    clock = Clock()
    old, new = SigningKey("a"), SigningKey("b")
    server.publish(old.jwk)
    verifier = make_verifier(server, clock)
    assert accepted(verifier, old.token())
    server.publish(old.jwk, new.jwk)

    clock.advance(REFETCH_SECONDS_MIN - 1)
    assert not accepted(verifier, new.token())
    assert server.requests == 1
    clock.advance(1)
    assert accepted(verifier, new.token())
    assert server.requests == 2


# A flood of made-up kids.


def test_a_flood_of_unknown_kids_fetches_at_most_once_per_interval(server: JwksServer) -> None:
    """Hundreds of tokens with made-up kids from 16 threads at once reach the identity
    provider once per refetch interval, and every one of them is refused."""
    clock = Clock()
    good = SigningKey("good")
    server.publish(good.jwk)
    verifier = make_verifier(server, clock)
    assert accepted(verifier, good.token())
    forger = SigningKey("forger")

    def flood() -> list[bool]:
        tokens = [forger.token(kid=f"made-up-{n}") for n in range(200)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(lambda token: accepted(verifier, token), tokens))

    assert not any(flood())
    assert server.requests == 1, "inside the interval after the first fetch: no fetch"
    clock.advance(REFETCH_SECONDS_MIN)
    assert not any(flood())
    assert server.requests == 2
    clock.advance(REFETCH_SECONDS_MIN)
    assert not any(flood())
    assert server.requests == 3
    assert accepted(verifier, good.token())
    assert server.requests == 3


def test_callers_waiting_for_one_fetch_are_bounded(server: JwksServer) -> None:
    """While a fetch hangs, at most `jwks_fetch_waiters_max` callers wait for it; the
    others are answered from the cache at once, so the thread pool stays free."""
    clock = Clock()
    good = SigningKey("good")
    server.publish(good.jwk)
    verifier = make_verifier(server, clock, fetch_timeout_seconds=HANG_GUARD_SECONDS * 2)
    assert accepted(verifier, good.token())
    clock.advance(REFETCH_SECONDS_MIN)
    server.gate.clear()
    extra = 4
    tokens = [SigningKey("x").token(kid=f"unknown-{n}")
              for n in range(limits.jwks_fetch_waiters_max + extra)]
    answered: list[bool] = []

    def verify(token: str) -> None:
        answered.append(accepted(verifier, token))

    threads = [threading.Thread(target=verify, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(answered) >= extra)
        time.sleep(0.2)  # Give a waiter that should not be waiting the chance to show.
        assert len(answered) == extra
        assert server.requests == 2
    finally:
        server.gate.set()
        for thread in threads:
            thread.join(HANG_GUARD_SECONDS)
    assert len(answered) == len(tokens)
    assert not any(answered)
    assert server.requests == 2


# The identity provider away.


def test_when_the_jwks_server_is_down_cached_keys_still_verify(server: JwksServer) -> None:
    """With the server gone, keys fetched before verify past their cache lifetime; a token
    whose kid was never fetched is 401, and nothing hangs."""
    clock = Clock()
    cached, unseen = SigningKey("cached"), SigningKey("unseen")
    server.publish(cached.jwk)
    verifier = make_verifier(server, clock)
    client = TestClient(make_app(verifier))
    assert get_whoami(client, cached.token()).status_code == 200

    server.stop()
    clock.advance(CACHE_SECONDS * 10)
    response = get_whoami(client, cached.token())
    assert response.status_code == 200, response.text
    assert_invalid(get_whoami(client, unseen.token()))
    clock.advance(REFETCH_SECONDS_MIN)
    assert_invalid(get_whoami(client, unseen.token()))
    assert get_whoami(client, cached.token()).status_code == 200


@pytest.mark.parametrize("fault", ["status_500", "not_json", "too_large", "no_eddsa_key",
                                   "redirect"])
def test_a_jwks_answer_that_cannot_be_used_keeps_the_cached_keys(
    server: JwksServer, rsa_key: SigningKey, fault: str
) -> None:
    """An error status, a body that is not JSON, a document over the size limit, one with
    no key for the pinned algorithm or a redirect is a failed fetch: the keys fetched
    before stay, and the failures are retried once per interval, no more."""
    clock = Clock()
    cached = SigningKey("cached")
    server.publish(cached.jwk)
    verifier = make_verifier(server, clock)
    assert accepted(verifier, cached.token())

    if fault == "status_500":
        server.status = 500
    elif fault == "not_json":
        server.raw_body = b"<html>maintenance</html>"
    elif fault == "too_large":
        server.document = {"keys": [cached.jwk, SigningKey("new").jwk],
                           "padding": "A" * limits.jwks_bytes_max}
    elif fault == "no_eddsa_key":
        server.publish(rsa_key.jwk)
    else:
        # The target would serve the document; a redirect is refused all the same.
        server.redirect_to = server.url
    clock.advance(CACHE_SECONDS)
    for _ in range(20):
        assert accepted(verifier, cached.token())
    assert server.requests == 2
    assert verifier.jwks is not None and verifier.jwks.kids() == ("cached",)
    clock.advance(REFETCH_SECONDS_MIN)
    assert accepted(verifier, cached.token())
    assert server.requests == 3


def test_before_any_key_could_be_fetched_tokens_answer_503_with_retry_after(
    server: JwksServer,
) -> None:
    """While no JWKS fetch has ever succeeded, a token that needs a JWKS key is answered
    503 identity_provider_unavailable with Retry-After (it may be good); once the
    identity provider answers, the same token is accepted."""
    clock = Clock()
    key = SigningKey("k")
    server.publish(key.jwk)
    server.status = 503
    client = TestClient(make_app(make_verifier(server, clock)))
    token = key.token()

    response = client.get("/whoami", headers={"Authorization": f"Bearer {token}",
                                              "Accept-Language": "en"})

    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == str(int(REFETCH_SECONDS_MIN))
    assert response.json()["code"] == "identity_provider_unavailable"
    assert response.json()["status"] == 503
    clock.advance(10)
    again = get_whoami(client, token)
    assert again.status_code == 503
    assert again.headers["retry-after"] == str(int(REFETCH_SECONDS_MIN - 10))
    assert server.requests == 1

    server.status = 200
    clock.advance(REFETCH_SECONDS_MIN - 10)
    assert get_whoami(client, token).status_code == 200
    assert server.requests == 2


def test_a_small_app_with_the_auth_handlers_answers_503_too(server: JwksServer) -> None:
    """`api.auth`'s own handlers (for apps without `api.problems`) answer the same 503."""
    server.stop()
    app = FastAPI()
    app.state.token_verifier = make_verifier(server, Clock())
    app.add_exception_handler(AuthenticationError, authentication_error_handler)
    app.add_exception_handler(IdentityProviderUnavailable,
                              identity_provider_unavailable_handler)

    @app.get("/whoami")
    def whoami(principal: Principal = Depends(get_principal)) -> dict[str, str]:  # noqa: B008
        return {"role": principal.role.value}

    response = get_whoami(TestClient(app), SigningKey("k").token())

    assert response.status_code == 503
    assert response.headers["retry-after"] == str(int(REFETCH_SECONDS_MIN))
    assert response.json()["code"] == "identity_provider_unavailable"


# The event loop and the thread pool.


@pytest.mark.parametrize("known_key", ["fresh", "stale"])
def test_a_hanging_jwks_fetch_stalls_no_other_request(server: JwksServer, known_key: str) -> None:
    """While one request waits on a fetch the server holds back, a request whose key is
    cached (fresh, or stale and being refreshed) and a route on the event loop are
    answered; the waiting request is answered once the server is."""
    clock = Clock()
    known, rotated = SigningKey("known"), SigningKey("rotated")
    server.publish(known.jwk)
    verifier = make_verifier(server, clock, fetch_timeout_seconds=HANG_GUARD_SECONDS * 2)
    assert accepted(verifier, known.token())
    server.publish(known.jwk, rotated.jwk)
    clock.advance(CACHE_SECONDS if known_key == "stale" else REFETCH_SECONDS_MIN)
    server.arrived.clear()
    server.gate.clear()
    app = make_app(verifier)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as client:
            def whoami(token: str) -> Any:
                return client.get("/whoami", headers={"Authorization": f"Bearer {token}"})

            waiting = asyncio.create_task(whoami(rotated.token()))
            await asyncio.to_thread(server.arrived.wait, HANG_GUARD_SECONDS)
            assert server.arrived.is_set()
            ping = await asyncio.wait_for(client.get("/ping"), HANG_GUARD_SECONDS)
            cached = await asyncio.wait_for(whoami(known.token()), HANG_GUARD_SECONDS)
            assert ping.status_code == 200
            assert cached.status_code == 200, cached.text
            assert not waiting.done(), "the fetch is still held back"
            server.gate.set()
            answered = await asyncio.wait_for(waiting, HANG_GUARD_SECONDS)
            assert answered.status_code == 200, answered.text

    try:
        asyncio.run(scenario())
    finally:
        server.gate.set()
    assert server.requests == 2


# Algorithms.


def test_a_token_for_another_algorithm_is_refused_without_a_fetch(
    server: JwksServer, rsa_key: SigningKey
) -> None:
    """Pinned to EdDSA, the API refuses an RS256 token whose kid names an RSA key the JWKS
    publishes, an HS256 token keyed with the published JWK, and `alg: none`, all without
    asking the identity provider; an EdDSA token naming the RSA kid finds no key."""
    clock = Clock()
    good = SigningKey("ed")
    server.publish(good.jwk, rsa_key.jwk)
    verifier = make_verifier(server, clock)
    assert accepted(verifier, good.token())
    clock.advance(REFETCH_SECONDS_MIN)
    claims = jwt.decode(good.token(), options={"verify_signature": False})
    forgeries = [
        rsa_key.token(),
        hand_made_token({"alg": "HS256", "kid": "ed"}, claims,
                        secret=json.dumps(good.jwk).encode()),
        hand_made_token({"alg": "HS256", "kid": "ed"}, claims, secret=good.jwk["x"].encode()),
        hand_made_token({"alg": "none", "kid": "ed"}, claims, secret=None),
    ]

    for token in forgeries:
        with pytest.raises(AuthenticationError, match="must be signed with EdDSA"):
            verifier.verify(token)
    assert server.requests == 1
    assert not accepted(verifier, good.token(kid=rsa_key.kid))
    assert verifier.jwks is not None and verifier.jwks.kids() == ("ed",)


# Static keys beside the JWKS.


def test_static_keys_keep_working_beside_jwks(server: JwksServer, tmp_path: Path) -> None:
    """With both LEDGER_JWT_PUBLIC_KEYS and a JWKS URL, a token signed by the static key is
    accepted (with or without a kid, without a fetch, even while the JWKS cannot be
    fetched), and so is one signed by a JWKS key."""
    static, published = SigningKey("static"), SigningKey("published")
    server.publish(published.jwk)
    server.status = 500
    settings = ApiSettings(jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_jwks_url=server.url,
                           jwt_public_keys=static.public_pem(),
                           dev_key_dir=tmp_path / "dev-keys", jwt_dev_key_allowed=False)
    client = TestClient(make_app(TokenVerifier.from_settings(settings)))

    assert get_whoami(client, static.token(kid=None)).status_code == 200
    assert get_whoami(client, static.token()).status_code == 200
    assert server.requests == 0
    assert get_whoami(client, published.token()).status_code == 503

    server.status = 200
    client = TestClient(make_app(TokenVerifier.from_settings(settings)))
    assert get_whoami(client, published.token()).status_code == 200
    assert get_whoami(client, static.token()).status_code == 200


# Settings and start-up.


def test_the_jwks_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """LEDGER_JWT_JWKS_* and LEDGER_JWT_DEV_KEY_ALLOWED set their fields."""
    monkeypatch.setenv("LEDGER_JWT_JWKS_URL", "https://idp.example/.well-known/jwks.json")
    monkeypatch.setenv("LEDGER_JWT_JWKS_CACHE_SECONDS", "600")
    monkeypatch.setenv("LEDGER_JWT_JWKS_REFETCH_SECONDS_MIN", "15")
    monkeypatch.setenv("LEDGER_JWT_JWKS_FETCH_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("LEDGER_JWT_DEV_KEY_ALLOWED", "false")

    settings = ApiSettings()

    assert settings.jwt_jwks_url == "https://idp.example/.well-known/jwks.json"
    assert settings.jwt_jwks_cache_seconds == 600
    assert settings.jwt_jwks_refetch_seconds_min == 15
    assert settings.jwt_jwks_fetch_timeout_seconds == 2.5
    assert settings.jwt_dev_key_allowed is False


@pytest.mark.parametrize(("name", "value"), [
    ("LEDGER_JWT_JWKS_URL", "http://idp.example/jwks.json"),
    ("LEDGER_JWT_JWKS_URL", "file:///etc/ledger/jwks.json"),
    ("LEDGER_JWT_JWKS_URL", "idp.example/jwks.json"),
    ("LEDGER_JWT_JWKS_FETCH_TIMEOUT_SECONDS", "60"),
    ("LEDGER_JWT_JWKS_REFETCH_SECONDS_MIN", "0"),
])
def test_unsafe_jwks_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """Keys over plain http to another host, a non-http URL, a fetch timeout beyond ten
    seconds or no refetch interval are configuration errors."""
    monkeypatch.setenv(name, value)

    with pytest.raises(ValueError, match=name.removeprefix("LEDGER_").lower()):
        ApiSettings()


def test_without_keys_and_without_the_development_key_the_api_does_not_start(
    tmp_path: Path,
) -> None:
    """LEDGER_JWT_DEV_KEY_ALLOWED=false with neither a JWKS URL nor public keys stops the
    API at start-up, before it touches the database or creates a development key."""
    settings = ApiSettings(jwt_jwks_url="", jwt_public_keys=(), jwt_dev_key_allowed=False,
                           dev_key_dir=tmp_path / "dev-keys",
                           database_url="postgresql://nobody@127.0.0.1:1/nothing")

    with pytest.raises(ValueError, match="LEDGER_JWT_JWKS_URL or LEDGER_JWT_PUBLIC_KEYS"), \
            TestClient(create_app(settings)):
        pass
    assert not (tmp_path / "dev-keys").exists()
