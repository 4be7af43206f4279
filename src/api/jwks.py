"""The identity provider's signing keys, fetched from its JWKS URL and matched by `kid`.

`JwksKeys.key_for(kid)` answers the public key the identity provider publishes
under that `kid`, for the one algorithm the API is pinned to. PyJWT's
`PyJWKClient` fetches and parses the document; the cache policy is ours, because
the client's own falls short for a payment service in three ways: once its cache
expires it has no keys at all while the endpoint is unreachable, failed fetches
are not rate limited (an outage turns every request into a fetch), and it holds
one lock across the network call, so every verifying thread queues behind a
slow fetch. Here:

- Fetched keys are fresh for `cache_seconds`. A fresh key answers at once,
  without a lock held across any I/O.
- An unknown `kid`, or a known one whose keys are stale, asks for a fetch. No
  fetch starts within `refetch_seconds_min` of the previous one (successful or
  not), and at most one is ever in flight, so a flood of tokens with made-up
  `kid`s reaches the identity provider at most once per that interval.
- A caller waits for a fetch at most `fetch_timeout_seconds`, and at most
  `limits.jwks_fetch_waiters_max` callers wait at once; the others answer from
  the cache at once. The fetch runs on a thread of its own, so an endpoint
  that trickles its answer delays no caller beyond that bound.
- A failed fetch keeps the keys fetched before: they go on verifying while the
  endpoint is unreachable, however stale. Only a successful fetch that no
  longer lists a key removes it.
- Until the first fetch succeeds there are no keys: `key_for` raises
  `IdentityProviderUnavailable` (503 with Retry-After) rather than calling a
  token that may be perfectly good invalid.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.request
from collections.abc import Callable
from http.client import HTTPException
from typing import Any, Literal
from urllib.error import HTTPError, URLError

from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, rsa
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError, PyJWKSetError

from ledger import limits

log = logging.getLogger(__name__)

PublicKey = ed25519.Ed25519PublicKey | ed448.Ed448PublicKey | rsa.RSAPublicKey
Algorithm = Literal["EdDSA", "RS256"]


class IdentityProviderUnavailable(Exception):  # noqa: N818 (named like ledger.errors.DatabaseUnavailable)
    """No key from the identity provider was ever fetched, so no token signed by one can
    be verified yet; answered with 503 and Retry-After."""

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__("the identity provider's keys could not be fetched yet")
        self.retry_after_seconds = retry_after_seconds


def check_key_fits_algorithm(public_key: object, algorithm: Algorithm) -> PublicKey:
    """The key, if it can verify `algorithm` tokens; else ValueError."""
    if algorithm == "EdDSA":
        if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            return public_key
    elif isinstance(public_key, rsa.RSAPublicKey) and (
            public_key.key_size >= limits.rsa_key_bits_min):
        return public_key
    msg = f"a {type(public_key).__name__} cannot verify {algorithm} tokens"
    raise ValueError(msg)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is refused: the keys come from the configured URL or from nowhere."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


class _BoundedJwksClient(PyJWKClient):
    """`PyJWKClient` whose fetch reads at most `limits.jwks_bytes_max` bytes and gives up
    between reads once its deadline has passed."""

    def fetch_data(self) -> Any:
        deadline = time.monotonic() + self.timeout
        request = urllib.request.Request(  # noqa: S310 (the settings allow http(s) only)
            self.uri, headers={"Accept": "application/json", **self.headers})
        body = bytearray()
        try:
            with urllib.request.build_opener(_RefuseRedirects()).open(
                    request, timeout=self.timeout) as response:
                while len(body) <= limits.jwks_bytes_max:
                    if time.monotonic() > deadline:
                        msg = f"no complete answer within {self.timeout} s"
                        raise TimeoutError(msg)
                    chunk = response.read1(limits.jwks_bytes_max + 1 - len(body))
                    if not chunk:
                        break
                    body += chunk
        except (URLError, TimeoutError, HTTPException, OSError) as error:
            if isinstance(error, HTTPError):
                error.close()
            msg = f"fetching {self.uri} failed: {error}"
            raise PyJWKClientConnectionError(msg) from error
        if len(body) > limits.jwks_bytes_max:
            msg = f"the JWKS document is larger than {limits.jwks_bytes_max} bytes"
            raise PyJWKClientError(msg)
        try:
            return json.loads(body)
        except ValueError as error:
            msg = f"the JWKS document is not JSON: {error}"
            raise PyJWKClientError(msg) from error


class _Fetch:
    """One fetch in flight; callers that need its outcome wait on `done`."""

    def __init__(self) -> None:
        self.done = threading.Event()


class JwksKeys:
    """The identity provider's current signing keys by `kid` (see the module docstring)."""

    def __init__(self, url: str, *, algorithm: Algorithm, cache_seconds: float,
                 refetch_seconds_min: float, fetch_timeout_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert cache_seconds > 0 and refetch_seconds_min >= 0 and fetch_timeout_seconds > 0
        self.url = url
        self.algorithm: Algorithm = algorithm
        self._cache_seconds = cache_seconds
        self._refetch_seconds_min = refetch_seconds_min
        self._fetch_timeout_seconds = fetch_timeout_seconds
        self._clock = clock
        # Our cache, not the client's: see the module docstring.
        self._client = _BoundedJwksClient(url, cache_jwk_set=False,
                                          timeout=fetch_timeout_seconds)
        # Guards the fields below; never held across I/O or a wait.
        self._lock = threading.Lock()
        self._keys: dict[str, PublicKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._in_flight: _Fetch | None = None
        self._waiters = threading.BoundedSemaphore(limits.jwks_fetch_waiters_max)

    def key_for(self, kid: str) -> PublicKey | None:
        """The key published under `kid`, or None when the identity provider publishes
        none (as far as a fetch allowed now can tell).

        Raises `IdentityProviderUnavailable` when no fetch has ever succeeded.
        """
        with self._lock:
            now = self._clock()
            key = self._keys.get(kid)
            fresh = self._fetched_at is not None and now - self._fetched_at < self._cache_seconds
            if key is not None and fresh:
                return key
            fetch = self._in_flight
            started_here = False
            if fetch is None and self._may_fetch(now):
                fetch = self._start_fetch(now)
                started_here = True
            # A known key whose keys are stale goes on verifying while another caller
            # refreshes them; the caller that started the refresh waits for it, so a key
            # removed by the identity provider stops verifying at the first refresh.
            if key is not None and not started_here:
                return key
        if fetch is not None and self._waiters.acquire(blocking=False):
            try:
                fetch.done.wait(self._fetch_timeout_seconds)
            finally:
                self._waiters.release()
        with self._lock:
            if self._fetched_at is None:
                raise IdentityProviderUnavailable(self._retry_after_seconds(self._clock()))
            return self._keys.get(kid)

    def fresh_key(self, kid: str) -> PublicKey | None:
        """The key published under `kid` if the keys held are fresh, else None; never
        fetches and never waits (a verified-token cache asks whether its key still holds)."""
        with self._lock:
            fresh = (self._fetched_at is not None
                     and self._clock() - self._fetched_at < self._cache_seconds)
            return self._keys.get(kid) if fresh else None

    def prefetch(self) -> None:
        """Start a fetch, if one may start now, without waiting for it (at start-up)."""
        with self._lock:
            if self._in_flight is None and self._may_fetch(self._clock()):
                self._start_fetch(self._clock())

    def kids(self) -> tuple[str, ...]:
        """The `kid`s of the keys held now."""
        with self._lock:
            return tuple(self._keys)

    def _may_fetch(self, now: float) -> bool:
        return (self._attempted_at is None
                or now - self._attempted_at >= self._refetch_seconds_min)

    def _retry_after_seconds(self, now: float) -> float:
        if self._in_flight is not None or self._attempted_at is None:
            return 1.0
        return max(1.0, math.ceil(self._attempted_at + self._refetch_seconds_min - now))

    def _start_fetch(self, now: float) -> _Fetch:
        assert self._in_flight is None, "at most one fetch is in flight"
        fetch = _Fetch()
        self._in_flight = fetch
        self._attempted_at = now
        threading.Thread(target=self._run_fetch, args=(fetch,), name="jwks-fetch",
                         daemon=True).start()
        return fetch

    def _run_fetch(self, fetch: _Fetch) -> None:
        keys: dict[str, PublicKey] | None = None
        try:
            keys = self._fetch_keys()
        except (PyJWKClientError, PyJWKSetError) as error:
            log.warning("JWKS fetch from %s failed; the %d keys fetched before stay in use: %s",
                        self.url, len(self._keys), error)
        finally:
            with self._lock:
                if keys is not None:
                    self._keys = keys
                    self._fetched_at = self._clock()
                self._in_flight = None
            fetch.done.set()
        if keys is not None:
            log.info("JWKS fetched from %s: kids %s", self.url, sorted(keys))

    def _fetch_keys(self) -> dict[str, PublicKey]:
        """The document's signing keys for our algorithm; PyJWKClientError when it has none
        (an identity provider never means to withdraw every key, so that is a failed fetch)."""
        keys: dict[str, PublicKey] = {}
        for jwk in self._client.get_signing_keys(refresh=True):
            kid = jwk.key_id
            assert isinstance(kid, str), "PyJWKClient keeps only keys with a kid"
            if jwk.algorithm_name != self.algorithm:
                continue  # A key for another algorithm never verifies our tokens.
            try:
                key = check_key_fits_algorithm(jwk.key, self.algorithm)
            except ValueError as error:
                log.warning("JWKS key %r from %s ignored: %s", kid, self.url, error)
                continue
            if kid in keys:
                log.warning("JWKS from %s lists kid %r twice; the first is used", self.url, kid)
                continue
            keys[kid] = key
        if not keys:
            msg = f"the JWKS document has no {self.algorithm} signing key"
            raise PyJWKClientError(msg)
        return keys
