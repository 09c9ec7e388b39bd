"""Sign up, log in, who am I."""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from infra.limiter import hashed
from infra.security import (
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
from resolvers.context import RequestContext
from resolvers.errors import EmailTaken, FieldErrors, InvalidCredentials, RateLimited

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
    password_hash = await hash_password(password, rounds=ctx.settings.bcrypt_rounds)
    async with ctx.services.db.begin() as conn:
        user = await queries.insert_user(
            conn, email=email, password_hash=password_hash, role=role.value, now=utcnow()
        )
    if user is None:  # a racing signup with the same email won
        raise EmailTaken()
    return user


async def signup(ctx: RequestContext, email: str, password: str) -> AuthResult:
    return issue_token(ctx, await create_user(ctx, email, password))


def _login_limits(ctx: RequestContext, email: str | None) -> list[tuple[str, str]]:
    """(metric label, limiter key) of the failed-login budgets this attempt draws on."""
    limits = []
    if email is not None:
        limits.append(("login_email", f"login:email:{hashed(email)}"))
    if ctx.client_ip:
        limits.append(("login_ip", f"login:ip:{ctx.client_ip}"))
    return limits


async def login(ctx: RequestContext, email: str, password: str) -> AuthResult:
    errors = FieldErrors()
    email = normalise_email(email, errors)
    limits = _login_limits(ctx, None if errors.errors else email)
    per_minute = ctx.settings.rate_limit_login_failures_per_minute
    services = ctx.services
    # Over a budget, the password is not even checked: guessing gets no answer at all.
    for label, key in limits:
        retry_after = await services.limiter.peek(key, per_minute)
        if retry_after is not None:
            services.metrics.rate_limited.labels(label).inc()
            raise RateLimited(retry_after, "Too many failed logins.")
    try:
        return await _check_credentials(ctx, email, password, valid_email=not errors.errors)
    except InvalidCredentials:
        for _, key in limits:
            await services.limiter.hit(key, per_minute)
        raise


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
    user = found[0]
    async with ctx.services.db.begin() as conn:
        await queries.set_role(conn, user.id, Role.ADMIN.value)
    # Cached order answers show their owner's role: make them stale.
    await events.after_commit(ctx.services, [], {user.id})
    return replace(user, role=Role.ADMIN.value)
