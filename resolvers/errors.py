"""Domain errors. schema/ maps each to the contract's `extensions.code`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


class DomainError(Exception):
    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"
    default_message: ClassVar[str] = "Something went wrong."

    def __init__(self, message: str | None = None, **extensions: Any) -> None:
        self.message = message or self.default_message
        self.extensions = extensions
        super().__init__(self.message)


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"
    default_message = "You must be signed in."


class Forbidden(DomainError):
    code = "FORBIDDEN"
    default_message = "You are not allowed to do this."


class NotFound(DomainError):
    code = "NOT_FOUND"
    default_message = "Not found."


class EmailTaken(DomainError):
    code = "EMAIL_TAKEN"
    default_message = "This email is already registered."


class InvalidCredentials(DomainError):
    code = "INVALID_CREDENTIALS"
    default_message = "Invalid email or password."


class VersionConflict(DomainError):
    code = "VERSION_CONFLICT"
    default_message = "The order was changed by someone else."

    def __init__(self, current_version: int) -> None:
        super().__init__(
            f"The order is at version {current_version}; reload it and try again.",
            currentVersion=current_version,
        )


class InvalidTransition(DomainError):
    code = "INVALID_TRANSITION"

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message, allowed=allowed)


class IdempotencyKeyReused(DomainError):
    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "This clientToken was already used for an order with different items."


class RateLimited(DomainError):
    code = "RATE_LIMITED"

    def __init__(self, retry_after: int, message: str = "Too many requests.") -> None:
        super().__init__(f"{message} Try again in {retry_after} s.", retryAfter=retry_after)


class PaymentProviderUnavailable(DomainError):
    code = "PAYMENT_PROVIDER_UNAVAILABLE"
    default_message = "The payment provider is unavailable; try again later."


class CursorExpired(DomainError):
    code = "CURSOR_EXPIRED"
    default_message = (
        "This cursor is older than the replay window: read the orders again, "
        "then subscribe without `after`."
    )


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class InvalidInput(DomainError):
    code = "BAD_USER_INPUT"

    def __init__(self, errors: list[FieldError]) -> None:
        self.field_errors = errors
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors)
        super().__init__(
            f"Invalid input: {summary}",
            fieldErrors=[{"field": e.field, "message": e.message} for e in errors],
        )


class FieldErrors:
    """Collects every problem in an input before failing once with all of them."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, message: str) -> None:
        self.errors.append(FieldError(field, message))

    def raise_if_any(self) -> None:
        if self.errors:
            raise InvalidInput(self.errors)
