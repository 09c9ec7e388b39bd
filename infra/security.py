"""Password hashing (bcrypt, bounded per process) and access tokens (HS256 JWT)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import bcrypt
import jwt

ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["sub", "role", "iat", "exp"]
_USER_ID_RE = re.compile(r"[1-9][0-9]{0,9}")
MAX_USER_ID = 2**31 - 1

T = TypeVar("T")


class PasswordHashingBusy(Exception):
    """Every password-hashing slot of this process is taken and so is every waiting place:
    the caller should be refused at once (and told to come back in `retry_after` s)."""

    retry_after = 1


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota
    (a container limited to one core still sees every core of the host)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = cores or os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


class HashingPool:
    """bcrypt off the event loop, at most `slots` hashes at once (one per core: more only
    makes each slower), and at most `waiting` more queued behind them. Past that a hash is
    refused at once (`PasswordHashingBusy`) instead of queueing: a burst of logins would
    otherwise wait for seconds, each holding a request, while the CPU is spent anyway.

    The short queue (as many places as slots) is what lets two people who log in at the
    same moment on a one-core instance both get in: a queued hash starts as soon as a
    running one ends, so it waits at most about one hash time (at 12 rounds, 0.24 s of CPU
    on the 2-core machine of docs/benchmarks), never seconds.

    A slot is held until the hash really ends: a request cancelled while its hash runs
    (the client went away) cannot free a slot that a thread still uses. A hash cancelled
    while still queued never runs."""

    def __init__(self, slots: int, waiting: int | None = None) -> None:
        self.slots = slots
        self.waiting = slots if waiting is None else waiting
        self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="bcrypt")
        self._admitted = 0  # running or queued
        self._lock = threading.Lock()  # the done callbacks run on the worker threads

    @property
    def admitted(self) -> int:
        return self._admitted

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._admitted >= self.slots + self.waiting:
                raise PasswordHashingBusy()
            self._admitted += 1
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._done()
            raise
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def _done(self, _: object = None) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self) -> None:
        """Queued and running hashes still end (and free their slots)."""
        self._executor.shutdown(wait=False)


_pool: HashingPool | None = None


def hashing_pool() -> HashingPool:
    global _pool
    if _pool is None:
        _pool = HashingPool(available_cores())
    return _pool


def configure_password_hashing(concurrency: int | None) -> HashingPool:
    """Size this process's hashing pool (PASSWORD_HASH_CONCURRENCY; None: the cores). One
    pool per process, as the cores are: every app built in the process shares it."""
    global _pool
    slots = concurrency or available_cores()
    if _pool is None or _pool.slots != slots:
        if _pool is not None:
            _pool.shutdown()
        _pool = HashingPool(slots)
    return _pool


async def hash_password(password: str, *, rounds: int) -> str:
    """bcrypt is deliberately slow: keep it off the event loop (and bounded)."""
    salt = bcrypt.gensalt(rounds=rounds)
    hashed = await hashing_pool().run(bcrypt.hashpw, password.encode(), salt)
    return hashed.decode()


# bcrypt reads at most 72 bytes, and bcrypt 5 refuses a longer password with ValueError.
BCRYPT_MAX_BYTES = 72


async def verify_password(password: str, password_hash: str) -> bool:
    """A password longer than bcrypt reads was never stored (signup takes 8 to 72 bytes):
    it is checked on its first 72 bytes, taking as long as any check, and never matches."""
    encoded = password.encode()
    checked = encoded[:BCRYPT_MAX_BYTES]
    matched = await hashing_pool().run(bcrypt.checkpw, checked, password_hash.encode())
    return matched and len(encoded) <= BCRYPT_MAX_BYTES


async def burn_password_check(password: str, *, rounds: int) -> None:
    """A check against a hash of a random password, made when the email is unknown, so
    that the answer takes as long as for a wrong password and does not reveal which
    emails exist."""
    dummy = _dummy_hashes.get(rounds)
    if dummy is None:
        salt = bcrypt.gensalt(rounds=rounds)
        made = await hashing_pool().run(bcrypt.hashpw, b"no-such-user-password", salt)
        dummy = _dummy_hashes[rounds] = made.decode()
    checked = password.encode()[:BCRYPT_MAX_BYTES]
    await hashing_pool().run(bcrypt.checkpw, checked, dummy.encode())


_dummy_hashes: dict[int, str] = {}


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    role: str
    issued_at: int
    expires_at: int


def create_access_token(
    user_id: int, role: str, *, secret: str, expires_minutes: int, now: float | None = None
) -> str:
    issued = int(now if now is not None else time.time())
    payload = {
        "sub": str(user_id),
        "role": role,
        "iat": issued,
        "exp": issued + expires_minutes * 60,
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


# Tokens already verified, by (secret, token): a client sends the same token with every
# request, and PyJWT's decode (base64, JSON, HMAC, claim checks) cost about 0.5 ms of a
# 5 ms request here. A hit still checks the expiry, which is the only claim that changes
# its verdict with time. Only valid tokens are remembered, at most this many.
_MAX_VERIFIED = 10_000
_verified: OrderedDict[tuple[str, str], TokenClaims] = OrderedDict()


def decode_access_token(token: str, *, secret: str) -> TokenClaims | None:
    """The claims of a valid HS256 token, or None for anything else (treated as no token)."""
    key = (secret, token)
    claims = _verified.get(key)
    if claims is not None:
        # PyJWT's own rule: expired once `exp <= now`.
        if claims.expires_at > time.time():
            _verified.move_to_end(key)
            return claims
        del _verified[key]
        return None
    claims = _decode(token, secret)
    if claims is not None:
        _verified[key] = claims
        if len(_verified) > _MAX_VERIFIED:
            _verified.popitem(last=False)
    return claims


def _decode(token: str, secret: str) -> TokenClaims | None:
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": _REQUIRED_CLAIMS},
        )
        subject = payload["sub"]
        # Our own user ids only: a positive 32-bit integer in plain digits (int() would
        # also take "+1", "1_0" or a number the database refuses, which failed the query).
        if not isinstance(subject, str) or not _USER_ID_RE.fullmatch(subject):
            return None
        if int(subject) > MAX_USER_ID:
            return None
        return TokenClaims(
            user_id=int(subject),
            role=str(payload["role"]),
            issued_at=int(payload["iat"]),
            expires_at=int(payload["exp"]),
        )
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None


def sign_webhook(body: bytes, secret: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_webhook_signature(body: bytes, header: str | None, secrets: list[bytes]) -> bool:
    """Constant-time check of `sha256=<hex>` against every configured secret."""
    if not header or not header.startswith("sha256="):
        return False
    given = header.removeprefix("sha256=").encode()
    ok = False
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        ok |= hmac.compare_digest(given, expected)
    return ok
