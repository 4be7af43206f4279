"""Who is calling: bearer access tokens, verified into a `Principal`.

Tokens are JWTs signed by the identity provider with one asymmetric algorithm,
EdDSA or RS256 (`LEDGER_JWT_ALGORITHM`). The verifier accepts that algorithm
only, so an unsigned token (`alg: none`) or one "signed" with HMAC using the
public key as the secret is refused before any key is used.

Claims: `iss`, `aud`, `sub`, `exp` and `role` are required; `sub` is the
caller's id (resident, merchant or staff) as a UUID; `complex_id`, a UUID, is
required for managers and coordinators and may be carried by any other role;
`jti` becomes the principal's token id (empty when the token has none).

Keys: the identity provider's JWKS URL (`LEDGER_JWT_JWKS_URL`; keys matched by
the token's `kid`, cached and refetched within bounds, see `api.jwks`) and static
public keys (`LEDGER_JWT_PUBLIC_KEYS`), either or both. Static keys are tried
first, whatever the token's `kid`; then the JWKS key its `kid` names.

Demo and test mode: with neither set, the verifier trusts the development key
pair in `LEDGER_DEV_KEY_DIR`, created on first use, and `mint_token` signs with
it, unless `LEDGER_JWT_DEV_KEY_ALLOWED` is false: then the API refuses to start
(production). Once either is set, the development private key signs nothing
the API accepts.

Failures raise `AuthenticationError` with a stable code (`token_missing`,
`token_invalid`, `token_expired`); `problem_for_authentication_error` turns it
into the 401 problem response. When no JWKS key could ever be fetched and no
static key verifies the token, `IdentityProviderUnavailable` is raised instead:
503 `identity_provider_unavailable` with Retry-After
(`problem_for_identity_provider_unavailable`).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.jwks import (
    Algorithm,
    IdentityProviderUnavailable,
    JwksKeys,
    PublicKey,
    check_key_fits_algorithm,
)
from api.settings import ApiSettings, get_settings
from ledger import limits

AuthenticationErrorCode = Literal["token_missing", "token_invalid", "token_expired"]

DEV_PRIVATE_KEY_FILE: Final = "dev-ed25519-private.pem"
DEV_PUBLIC_KEY_FILE: Final = "dev-ed25519-public.pem"
PROBLEM_TYPE_PREFIX: Final = "/problems/"


class Role(enum.StrEnum):
    """What the caller is to the platform; each role has its own rights."""

    RESIDENT = "resident"
    COORDINATOR = "coordinator"
    MANAGER = "manager"
    MERCHANT = "merchant"
    AUDITOR = "auditor"
    BILLING = "billing"
    PLATFORM = "platform"
    OPERATOR = "operator"


ROLES_SCOPED_TO_A_COMPLEX: Final = frozenset({Role.COORDINATOR, Role.MANAGER})


@dataclass(frozen=True)
class Principal:
    """The verified caller of one request."""

    subject: uuid.UUID
    role: Role
    complex_id: uuid.UUID | None
    token_id: str
    household_id: uuid.UUID | None = None
    """For residents: the household the identity provider verified they live in."""


class AuthenticationError(Exception):
    """The request does not prove who is calling; answered with 401."""

    def __init__(self, code: AuthenticationErrorCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: AuthenticationErrorCode = code
        self.detail = detail


# Development keys.


def ensure_dev_keypair(dev_key_dir: str | Path) -> tuple[Path, Path]:
    """Create the development Ed25519 key pair once, reuse it after; return both PEM paths.

    The private key file is written with mode 0600 and never replaced, even when
    several processes start at the same time: each writes a temporary file and
    links it into place, and whoever loses the race uses the winner's key.
    """
    directory = Path(dev_key_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path = directory / DEV_PRIVATE_KEY_FILE
    public_path = directory / DEV_PUBLIC_KEY_FILE

    if not private_path.exists():
        private_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
        # mkstemp creates the file with mode 0600.
        descriptor, temporary_name = tempfile.mkstemp(dir=directory, prefix=".dev-key-")
        try:
            with os.fdopen(descriptor, "wb") as temporary:
                temporary.write(private_pem)
            # Another process linked its key first; that key wins.
            with contextlib.suppress(FileExistsError):
                os.link(temporary_name, private_path)
        finally:
            os.unlink(temporary_name)

    private_key = _load_dev_private_key(private_path)
    public_pem = private_key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    # The public file is derived from the private one, so rewriting it is always safe.
    if not public_path.exists() or public_path.read_bytes() != public_pem:
        descriptor, temporary_name = tempfile.mkstemp(dir=directory, prefix=".dev-key-")
        with os.fdopen(descriptor, "wb") as temporary:
            temporary.write(public_pem)
        os.chmod(temporary_name, 0o644)  # A public key is meant to be read.
        os.replace(temporary_name, public_path)
    return private_path, public_path


def _load_dev_private_key(private_path: Path) -> ed25519.Ed25519PrivateKey:
    private_key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    if not isinstance(private_key, ed25519.Ed25519PrivateKey):
        msg = f"{private_path} does not hold an Ed25519 private key"
        raise TypeError(msg)
    return private_key


def mint_token(
    role: Role,
    subject: uuid.UUID,
    complex_id: uuid.UUID | None = None,
    *,
    ttl_seconds: int = 3600,
    settings: ApiSettings | None = None,
    household_id: uuid.UUID | None = None,
) -> str:
    """Sign an access token with the development key (EdDSA), for demos and tests.

    The API accepts it only in demo mode, when neither `LEDGER_JWT_PUBLIC_KEYS` nor
    `LEDGER_JWT_JWKS_URL` is set.
    """
    settings = settings or get_settings()
    role = Role(role)
    if role in ROLES_SCOPED_TO_A_COMPLEX and complex_id is None:
        msg = f"a {role} token needs a complex_id"
        raise ValueError(msg)
    if not 1 <= ttl_seconds <= limits.token_ttl_seconds_max:
        msg = f"ttl_seconds must be within 1..{limits.token_ttl_seconds_max}"
        raise ValueError(msg)

    private_path, _ = ensure_dev_keypair(settings.dev_key_dir)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(subject),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": str(uuid.uuid4()),
        "role": role.value,
    }
    if complex_id is not None:
        claims["complex_id"] = str(complex_id)
    if household_id is not None:
        claims["household_id"] = str(household_id)
    return jwt.encode(claims, _load_dev_private_key(private_path), algorithm="EdDSA")


# Verification.


@dataclass(frozen=True)
class _Verified:
    """A token a verifier accepted: whom it names, until when, and which key signed it."""

    principal: Principal
    valid_until: float
    """The token's `exp` plus the clock leeway, in seconds since the epoch."""
    kid: str | None
    """The JWKS `kid` of the key that signed it; None for a static key."""
    key: PublicKey


class TokenVerifier:
    """Turns a bearer token into a `Principal`, or raises `AuthenticationError`."""

    def __init__(
        self,
        *,
        algorithm: Algorithm,
        issuer: str,
        audience: str,
        public_keys: tuple[PublicKey, ...] = (),
        jwks: JwksKeys | None = None,
    ) -> None:
        assert public_keys or jwks is not None, "a verifier needs at least one key source"
        assert jwks is None or jwks.algorithm == algorithm
        for public_key in public_keys:
            check_key_fits_algorithm(public_key, algorithm)
        self.algorithm: Algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.public_keys = public_keys
        self.jwks = jwks
        # Tokens verified before, by their text (see `cached`). Read without the lock (a
        # dictionary look-up is atomic); changed only under it.
        self._verified: dict[str, _Verified] = {}
        self._verified_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> TokenVerifier:
        """Load the configured keys, or the development key when none is configured.

        Raises ValueError when the settings name no key source and the development
        key is not allowed (or cannot sign the configured algorithm): the API then
        refuses to start.
        """
        public_keys = tuple(_load_public_key(entry) for entry in settings.jwt_public_keys)
        jwks = None
        if settings.jwt_jwks_url:
            jwks = JwksKeys(
                settings.jwt_jwks_url,
                algorithm=settings.jwt_algorithm,
                cache_seconds=settings.jwt_jwks_cache_seconds,
                refetch_seconds_min=settings.jwt_jwks_refetch_seconds_min,
                fetch_timeout_seconds=settings.jwt_jwks_fetch_timeout_seconds,
            )
        elif not public_keys:
            if not settings.jwt_dev_key_allowed:
                msg = ("no token keys: set LEDGER_JWT_JWKS_URL or LEDGER_JWT_PUBLIC_KEYS "
                       "(LEDGER_JWT_DEV_KEY_ALLOWED is false, so the development key "
                       "is not trusted)")
                raise ValueError(msg)
            if settings.jwt_algorithm != "EdDSA":
                msg = ("LEDGER_JWT_PUBLIC_KEYS or LEDGER_JWT_JWKS_URL must be set when "
                       "LEDGER_JWT_ALGORITHM is not EdDSA")
                raise ValueError(msg)
            _, public_path = ensure_dev_keypair(settings.dev_key_dir)
            public_keys = (_load_public_key(str(public_path)),)
        return cls(
            algorithm=settings.jwt_algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            public_keys=public_keys,
            jwks=jwks,
        )

    def verify(self, token: str) -> Principal:
        """The principal the token names, if a trusted key signed it and its claims hold.

        Blocks for at most the JWKS fetch timeout, and only when the token's `kid`
        asks for keys the verifier does not hold: call it from a worker thread
        (`get_principal_async` runs it on the thread pool when `cached` has no answer).
        """
        if not token or len(token) > limits.token_length_max:
            raise AuthenticationError("token_invalid", "The access token is malformed.")
        principal = self.cached(token)
        if principal is not None:
            return principal
        claims, kid, key = self._decode(token)
        principal = _principal_from_claims(claims)
        self._remember(token, _Verified(
            principal, valid_until=int(claims["exp"]) + limits.clock_leeway_seconds,
            kid=kid, key=key))
        return principal

    def cached(self, token: str) -> Principal | None:
        """The principal of a token this verifier accepted before and would accept now,
        without checking its signature again; None when that takes a full verification.
        Never blocks: safe on the event loop.

        A verification depends only on the token's text, the key that signed it and the
        time, so an entry is good while the token has not expired (its `exp` plus the
        clock leeway, exactly when PyJWT would start refusing it) and, for a JWKS key,
        while the JWKS holds that very key, fresh. A key the identity provider removed,
        or keys whose cache time ran out, send the token through `verify`'s full path
        (which refetches the keys as it always did). Static keys never change in a
        process. Each uvicorn worker has its own cache; none depends on another's.
        """
        entry = self._verified.get(token)
        if entry is None or time.time() >= entry.valid_until:
            return None
        if entry.kid is not None and (
                self.jwks is None or self.jwks.fresh_key(entry.kid) is not entry.key):
            return None
        return entry.principal

    def _remember(self, token: str, entry: _Verified) -> None:
        """Keep `entry`, forgetting the oldest entry beyond `limits.verified_tokens_max`."""
        with self._verified_lock:
            while len(self._verified) >= limits.verified_tokens_max:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = entry

    def _decode(self, token: str) -> tuple[dict[str, Any], str | None, PublicKey]:
        """The token's claims, the JWKS `kid` of the key that signed it (None for a
        static key) and that key."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthenticationError("token_invalid", "The access token is malformed.") from None
        # The pinned algorithm is checked before any key is looked up, so a token
        # naming another one never causes a JWKS fetch. (jwt.decode checks it again.)
        if header.get("alg") != self.algorithm:
            raise AuthenticationError(
                "token_invalid", f"The access token must be signed with {self.algorithm}."
            )
        for public_key in self.public_keys:
            claims = self._decode_with(token, public_key)
            if claims is not None:
                return claims, None, public_key
        kid = header.get("kid")
        if self.jwks is not None and isinstance(kid, str) and kid:
            # May raise IdentityProviderUnavailable (503): no JWKS key was ever fetched.
            jwks_key = self.jwks.key_for(kid)
            if jwks_key is not None:
                claims = self._decode_with(token, jwks_key)
                if claims is not None:
                    return claims, kid, jwks_key
        raise AuthenticationError(
            "token_invalid", "The access token is not signed by a trusted key."
        )

    def _decode_with(self, token: str, public_key: PublicKey) -> dict[str, Any] | None:
        """The token's claims if `public_key` signed it (None if it did not), once they hold."""
        # PyJWT checks the signature before the claims, so a token is only ever
        # reported as expired once a trusted key has been shown to sign it.
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public_key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=limits.clock_leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub", "role"]},
            )
        except jwt.InvalidSignatureError:
            return None
        except jwt.ExpiredSignatureError:
            raise AuthenticationError(
                "token_expired", "The access token has expired."
            ) from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError(
                "token_invalid", "The access token is not meant for this API."
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(
                "token_invalid",
                "The access token comes from an issuer this API does not trust.",
            ) from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError(
                "token_invalid", "The access token is not valid yet."
            ) from None
        except jwt.InvalidAlgorithmError:
            raise AuthenticationError(
                "token_invalid", f"The access token must be signed with {self.algorithm}."
            ) from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthenticationError(
                "token_invalid", f"The access token lacks the {error.claim!r} claim."
            ) from None
        except jwt.InvalidTokenError:
            raise AuthenticationError(
                "token_invalid", "The access token is malformed."
            ) from None
        return claims


def _principal_from_claims(claims: dict[str, Any]) -> Principal:
    subject = _uuid_claim(claims, "sub")
    assert subject is not None, "sub is a required claim"
    try:
        role = Role(claims["role"])
    except ValueError:
        raise AuthenticationError(
            "token_invalid", "The access token names an unknown role."
        ) from None
    complex_id = _uuid_claim(claims, "complex_id")
    if role in ROLES_SCOPED_TO_A_COMPLEX and complex_id is None:
        raise AuthenticationError(
            "token_invalid", f"A {role.value} access token must carry a complex_id."
        )
    token_id = claims.get("jti", "")
    if not isinstance(token_id, str) or len(token_id) > limits.token_id_length_max:
        raise AuthenticationError("token_invalid", "The access token has an invalid jti claim.")
    return Principal(subject=subject, role=role, complex_id=complex_id, token_id=token_id,
                     household_id=_uuid_claim(claims, "household_id"))


def _uuid_claim(claims: dict[str, Any], name: str) -> uuid.UUID | None:
    value = claims.get(name)
    if value is None:
        return None
    # Only the canonical hyphenated form, so one id has one spelling in every token.
    try:
        parsed = uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != value.lower():
        raise AuthenticationError("token_invalid", f"The {name} claim is not a UUID.")
    return parsed


def _load_public_key(entry: str) -> PublicKey:
    """One public key from inline PEM text or from the path of a PEM file."""
    if entry.lstrip().startswith("-----BEGIN"):
        pem = entry.replace("\\n", "\n").encode()
    else:
        pem = Path(entry).read_bytes()
    public_key = serialization.load_pem_public_key(pem)
    if not isinstance(public_key, PublicKey):
        msg = f"unsupported public key type {type(public_key).__name__}"
        raise TypeError(msg)
    return public_key


@functools.lru_cache(maxsize=1)
def default_token_verifier() -> TokenVerifier:
    """The verifier built from `get_settings()`, once."""
    return TokenVerifier.from_settings(get_settings())


# FastAPI.


def bearer_token(request: Request) -> str:
    """The token of the request's `Authorization: Bearer` header."""
    header = request.headers.get("authorization")
    if header is None:
        raise AuthenticationError("token_missing", "The request has no Authorization header.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise AuthenticationError(
            "token_missing", "The Authorization header is not a Bearer token."
        )
    return token.strip()


def token_verifier(request: Request) -> TokenVerifier:
    """`request.app.state.token_verifier` when the application set one at start-up, else
    the verifier built once from the environment."""
    verifier = getattr(request.app.state, "token_verifier", None)
    if verifier is None:
        verifier = default_token_verifier()
    assert isinstance(verifier, TokenVerifier)
    return verifier


def get_principal(request: Request) -> Principal:
    """FastAPI dependency: the caller named by the `Authorization: Bearer` header.

    Sync, so FastAPI runs it on its thread pool; `get_principal_async` is the same
    answer without the thread hop when the token was verified before.
    """
    return token_verifier(request).verify(bearer_token(request))


async def get_principal_async(request: Request) -> Principal:
    """`get_principal` for async dependencies: a token verified before (see
    `TokenVerifier.cached`) is answered on the event loop, a dictionary look-up; any
    other is verified on the thread pool, since verifying may wait for a JWKS fetch."""
    token = bearer_token(request)
    verifier = token_verifier(request)
    principal = verifier.cached(token)
    if principal is not None:
        return principal
    return await run_in_threadpool(verifier.verify, token)


_problem_titles: Final[dict[AuthenticationErrorCode, str]] = {
    "token_missing": "Authentication required",
    "token_invalid": "Invalid access token",
    "token_expired": "Access token expired",
}


def problem_for_authentication_error(exc: AuthenticationError) -> JSONResponse:
    """The RFC 9457 problem response (401) for a failed authentication."""
    # RFC 6750 section 3.1: a request without credentials gets no error code.
    challenge = "Bearer" if exc.code == "token_missing" else 'Bearer error="invalid_token"'
    return JSONResponse(
        status_code=401,
        media_type="application/problem+json",
        headers={"WWW-Authenticate": challenge, "Cache-Control": "no-store"},
        content={
            "type": f"{PROBLEM_TYPE_PREFIX}{exc.code}",
            "title": _problem_titles[exc.code],
            "status": 401,
            "detail": exc.detail,
            "code": exc.code,
        },
    )


async def authentication_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Exception handler for `app.add_exception_handler(AuthenticationError, ...)`."""
    assert isinstance(exc, AuthenticationError)
    return problem_for_authentication_error(exc)


def problem_for_identity_provider_unavailable(exc: IdentityProviderUnavailable) -> JSONResponse:
    """The RFC 9457 problem response (503 with Retry-After) when no key of the identity
    provider could be fetched yet: the token may be good, so the client should retry
    it rather than discard it."""
    code = "identity_provider_unavailable"
    return JSONResponse(
        status_code=503,
        media_type="application/problem+json",
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_seconds))),
                 "Cache-Control": "no-store"},
        content={
            "type": f"{PROBLEM_TYPE_PREFIX}{code}",
            "title": "Identity provider unavailable",
            "status": 503,
            "detail": "The identity provider's signing keys could not be fetched yet; "
                      "retry the request after the indicated time.",
            "code": code,
        },
    )


async def identity_provider_unavailable_handler(
    _request: Request, exc: Exception
) -> JSONResponse:
    """Exception handler for `app.add_exception_handler(IdentityProviderUnavailable, ...)`."""
    assert isinstance(exc, IdentityProviderUnavailable)
    return problem_for_identity_provider_unavailable(exc)
