"""Sign up, log in, who am I; roles."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from infra import tracing
from infra.limiter import hashed
from infra.security import (
    PasswordHashingBusy,
    burn_password_check,
    create_access_token,
    hash_password,
    verify_password,
)
from models import queries
from models.rows import UserRow, replace
from models.state import Role
from models.tables import utcnow
from resolvers import events
from resolvers.context import CALLER_CHECK_SECONDS, RequestContext, caller_scope
from resolvers.errors import EmailTaken, FieldErrors, InvalidCredentials, NotFound, RateLimited

log = logging.getLogger("order_service")

PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 72  # bcrypt ignores anything longer


@dataclass(frozen=True, slots=True)
class AuthResult:
    access_token: str
    user: UserRow


def normalise_email(raw: str, errors: FieldErrors, field: str = "email") -> str:
    try:
        checked = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        errors.add(field, str(exc))
        return raw
    return checked.normalized.lower()


def check_password(password: str, errors: FieldErrors, field: str = "password") -> None:
    size = len(password.encode())
    if size < PASSWORD_MIN_BYTES or size > PASSWORD_MAX_BYTES:
        errors.add(field, f"must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes long")


def issue_token(ctx: RequestContext, user: UserRow) -> AuthResult:
    token = create_access_token(
        user.id,
        user.role,
        secret=ctx.settings.secret_key.get_secret_value(),
        expires_minutes=ctx.settings.jwt_expires_minutes,
    )
    return AuthResult(access_token=token, user=user)


async def find_user_by_email(ctx: RequestContext, email: str) -> tuple[UserRow, str] | None:
    """The user with this normalised email, and its password hash."""
    async with ctx.services.db.connect() as conn:
        return await queries.user_by_email(conn, email)


async def create_user(
    ctx: RequestContext, email: str, password: str, role: Role = Role.USER
) -> UserRow:
    errors = FieldErrors()
    email = normalise_email(email, errors)
    check_password(password, errors)
    errors.raise_if_any()
    # Checked first so that a taken email costs no bcrypt round; the insert still decides.
    if await find_user_by_email(ctx, email) is not None:
        raise EmailTaken()
    try:
        password_hash = await hash_password(password, rounds=ctx.settings.bcrypt_rounds)
    except PasswordHashingBusy as exc:
        raise _hashing_busy(ctx, exc) from None
    async with ctx.services.db.begin() as conn:
        user = await queries.insert_user(
            conn, email=email, password_hash=password_hash, role=role.value, now=utcnow()
        )
    if user is None:  # a racing signup with the same email won
        raise EmailTaken()
    return user


@tracing.use_case("accounts.signup")
async def signup(ctx: RequestContext, email: str, password: str) -> AuthResult:
    return issue_token(ctx, await create_user(ctx, email, password))


def _login_limits(ctx: RequestContext, email: str | None) -> dict[str, str]:
    """Limiter key -> metric label of the failed-login budgets this attempt draws on."""
    limits = {}
    if email is not None:
        limits[f"login:email:{hashed(email)}"] = "login_email"
    if ctx.client_ip:
        limits[f"login:ip:{ctx.client_ip}"] = "login_ip"
    return limits


def _hashing_busy(ctx: RequestContext, exc: PasswordHashingBusy) -> RateLimited:
    ctx.services.metrics.rate_limited.labels("password_hashing").inc()
    return RateLimited(exc.retry_after, "Too many password checks at once on this server.")


@tracing.use_case("accounts.login")
async def login(ctx: RequestContext, email: str, password: str) -> AuthResult:
    errors = FieldErrors()
    email = normalise_email(email, errors)
    limits = _login_limits(ctx, None if errors.errors else email)
    keys = list(limits)
    per_minute = ctx.settings.rate_limit_login_failures_per_minute
    limiter = ctx.services.limiter
    # The failed-login budgets (per email and per client address) are spent before the
    # password is checked, all or none in one atomic step, and given back when the check
    # was not a failed guess. Checking first and spending after would let every racing
    # guess through before any of them spent: racing guesses now get at most the budget
    # of password checks. Over a budget, the password is not even looked at.
    refused = await limiter.reserve(keys, per_minute)
    if refused is not None:
        ctx.services.metrics.rate_limited.labels(limits[refused.key]).inc()
        raise RateLimited(refused.retry_after, "Too many failed logins.")
    try:
        result = await _check_credentials(ctx, email, password, valid_email=not errors.errors)
    except InvalidCredentials:
        raise  # the reservation stays spent: this was a failed login
    except PasswordHashingBusy as exc:
        await limiter.release(keys, per_minute)  # nothing was checked
        raise _hashing_busy(ctx, exc) from None
    except Exception:
        await limiter.release(keys, per_minute)  # a failure of ours, not a wrong guess
        raise
    await limiter.release(keys, per_minute)
    return result


async def _check_credentials(
    ctx: RequestContext, email: str, password: str, *, valid_email: bool
) -> AuthResult:
    if not valid_email or not password:
        raise InvalidCredentials()
    found = await find_user_by_email(ctx, email)
    if found is None:
        await burn_password_check(password, rounds=ctx.settings.bcrypt_rounds)
        raise InvalidCredentials()
    user, password_hash = found
    if not await verify_password(password, password_hash):
        raise InvalidCredentials()
    return issue_token(ctx, user)


async def promote_or_create_admin(ctx: RequestContext, email: str, password: str) -> UserRow:
    """`order-service create-admin`: a new admin, or an existing user made one."""
    errors = FieldErrors()
    email = normalise_email(email, errors)
    check_password(password, errors)
    errors.raise_if_any()
    found = await find_user_by_email(ctx, email)
    if found is None:
        return await create_user(ctx, email, password, Role.ADMIN)
    return await change_role(ctx, found[0], Role.ADMIN)


async def set_role(ctx: RequestContext, email: str, role: Role) -> UserRow:
    """`order-service set-role`: make an existing user an admin, or an admin a user."""
    errors = FieldErrors()
    email = normalise_email(email, errors)
    errors.raise_if_any()
    found = await find_user_by_email(ctx, email)
    if found is None:
        raise NotFound(f"No user has the email {email}.")
    return await change_role(ctx, found[0], role)


async def change_role(ctx: RequestContext, user: UserRow, role: Role) -> UserRow:
    """Store the role, then replace the user's cache generation: cached order answers,
    which show their owner's role, become unreachable, and every instance reads the user
    again on their next request (resolvers.context.Callers) once CALLER_CHECK_SECONDS
    have passed, which this waits for when other processes share the generations."""
    services = ctx.services
    async with services.db.begin() as conn:
        await queries.set_role(conn, user.id, role.value)
    services.callers.forget(user.id)
    try:
        await services.cache.bump([caller_scope(user.id), *events.order_cache_scopes({user.id})])
    except Exception:
        # Lost with Redis away: the next epoch covers it, and what instances remember
        # of the user lapses within USER_CACHE_SECONDS anyway.
        log.warning("cache generation bump failed after a role change", exc_info=True)
    else:
        if services.cache.shared and services.settings.user_cache_seconds > 0:
            await asyncio.sleep(CALLER_CHECK_SECONDS)
    return replace(user, role=role.value)
