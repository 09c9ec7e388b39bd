"""Password hashing (bcrypt) and access tokens (HS256 JWT)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from dataclasses import dataclass

import bcrypt
import jwt

ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["sub", "role", "iat", "exp"]
_USER_ID_RE = re.compile(r"[1-9][0-9]{0,9}")
MAX_USER_ID = 2**31 - 1


async def hash_password(password: str, *, rounds: int) -> str:
    """bcrypt is deliberately slow: keep it off the event loop."""
    salt = bcrypt.gensalt(rounds=rounds)
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), salt)
    return hashed.decode()


async def verify_password(password: str, password_hash: str) -> bool:
    return await asyncio.to_thread(bcrypt.checkpw, password.encode(), password_hash.encode())


# A hash of a random password, checked against when the email is unknown, so that the
# answer takes as long as for a wrong password and does not reveal which emails exist.
_DUMMY_HASH = bcrypt.hashpw(b"no-such-user-password", bcrypt.gensalt(rounds=4)).decode()


async def burn_password_check(password: str, *, rounds: int) -> None:
    dummy = _dummy_hash_for(rounds)
    await asyncio.to_thread(bcrypt.checkpw, password.encode(), dummy.encode())


_dummy_hashes: dict[int, str] = {4: _DUMMY_HASH}


def _dummy_hash_for(rounds: int) -> str:
    if rounds not in _dummy_hashes:
        _dummy_hashes[rounds] = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=rounds)).decode()
    return _dummy_hashes[rounds]


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
