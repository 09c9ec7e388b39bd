"""Sign up, log in, who am I."""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from infra.limiter import hashed
from infra.security import (
    burn_password_check,
    create_access_token,
    hash_password,
    verify_password,
)
from models.state import Role
from models.tables import User
from resolvers import events
from resolvers.context import RequestContext
from resolvers.errors import EmailTaken, FieldErrors, InvalidCredentials, RateLimited

PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 72  # bcrypt ignores anything longer


@dataclass(frozen=True, slots=True)
class AuthResult:
    access_token: str
    user: User


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


def issue_token(ctx: RequestContext, user: User) -> AuthResult:
    assert user.id is not None
    token = create_access_token(
        user.id,
        user.role,
        secret=ctx.settings.secret_key.get_secret_value(),
        expires_minutes=ctx.settings.jwt_expires_minutes,
    )
    return AuthResult(access_token=token, user=user)


async def find_user_by_email(ctx: RequestContext, email: str) -> User | None:
    async with ctx.services.db.read() as session:
        result = await session.execute(select(User).where(func.lower(col(User.email)) == email))
        return result.scalar_one_or_none()


async def create_user(
    ctx: RequestContext, email: str, password: str, role: Role = Role.USER
) -> User:
    errors = FieldErrors()
    email = normalise_email(email, errors)
    check_password(password, errors)
    errors.raise_if_any()
    if await find_user_by_email(ctx, email) is not None:
        raise EmailTaken()
    password_hash = await hash_password(password, rounds=ctx.settings.bcrypt_rounds)
    user = User(email=email, password_hash=password_hash, role=role.value)
    try:
        async with ctx.services.db.transaction() as session:
            session.add(user)
    except IntegrityError as exc:  # a racing signup with the same email won
        raise EmailTaken() from exc
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
    user = await find_user_by_email(ctx, email)
    if user is None:
        await burn_password_check(password, rounds=ctx.settings.bcrypt_rounds)
        raise InvalidCredentials()
    if not await verify_password(password, user.password_hash):
        raise InvalidCredentials()
    return issue_token(ctx, user)


async def promote_or_create_admin(ctx: RequestContext, email: str, password: str) -> User:
    """`order-service create-admin`: a new admin, or an existing user made one."""
    errors = FieldErrors()
    email = normalise_email(email, errors)
    check_password(password, errors)
    errors.raise_if_any()
    existing = await find_user_by_email(ctx, email)
    if existing is None:
        return await create_user(ctx, email, password, Role.ADMIN)
    async with ctx.services.db.transaction() as session:
        user = await session.get(User, existing.id)
        assert user is not None
        user.role = Role.ADMIN.value
        session.add(user)
    # Cached order answers show their owner's role: make them stale.
    await events.after_commit(ctx.services, [], {user.id} if user.id is not None else set())
    return user
