"""One settings class, read from the environment (see the contract's configuration table)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_KEY = "dev-only-secret-key-do-not-use-in-production"  # noqa: S105 - a known development default
DEV_WEBHOOK_SECRET = "dev-only-webhook-secret-do-not-use-in-production"  # noqa: S105 - a known development default
_DEFAULT_SECRETS = {DEV_SECRET_KEY, DEV_WEBHOOK_SECRET, "", "changeme", "secret"}

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """The configuration cannot be used; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

    database_url: str = "sqlite+aiosqlite:///./orders.db"
    redis_url: str | None = None
    # Prepended to every Redis key and channel, so that deployments (or test runs) can
    # share one Redis without seeing each other's limits, cache or events.
    redis_key_prefix: str = "order-service:"
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    webhook_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)
    app_env: Literal["development", "test", "production"] = "development"
    jwt_expires_minutes: int = Field(60, ge=1)
    rate_limit_orders_per_minute: int = Field(10, ge=0)
    rate_limit_login_failures_per_minute: int = Field(10, ge=0)
    cache_ttl_seconds: int = Field(30, ge=0)
    # How long an instance may remember who a caller is (role included) between database
    # reads on queries; a role change through the service is seen at once. The contract:
    # a demoted admin loses admin rights within a minute, so at most 60.
    user_cache_seconds: int = Field(50, ge=0, le=60)
    payment_provider_url: str | None = None
    # The built-in simulated provider (/payments/simulator) lets whoever starts a payment
    # mark it paid. Served when PAYMENT_PROVIDER_URL is unset, except in production, where
    # it must be asked for with PAYMENT_SIMULATOR=on (a demo, never real money).
    payment_simulator: bool = False
    payment_provider_timeout_seconds: float = Field(5.0, gt=0)
    payment_retry_base_seconds: float = Field(0.2, ge=0)
    # Calls a second from one instance to the provider (infra/provider.py); 0: unlimited.
    payment_provider_max_rate: float = Field(50.0, ge=0)
    cors_origins: str = ""
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    public_url: str | None = None

    bcrypt_rounds: int = Field(12, ge=4, le=16)
    # bcrypt hashes run at once per process (as many more may wait); unset: the cores.
    password_hash_concurrency: int | None = Field(None, ge=1)
    db_pool_size: int = Field(10, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    query_max_depth: int = Field(15, ge=2)
    query_max_tokens: int = Field(4000, ge=100)
    query_max_aliases: int = Field(30, ge=1)
    # Document limits checked in one linear walk before validation (schema/limits.py).
    query_max_nodes: int = Field(2000, ge=10)
    query_max_spreads: int = Field(32, ge=0)
    query_max_selections: int = Field(100, ge=1)
    query_max_repeated_fields: int = Field(20, ge=0)
    query_max_cost: int = Field(2500, ge=1)
    ws_max_subscriptions_per_connection: int = Field(20, ge=1)
    ws_max_connections_per_user: int = Field(10, ge=1)
    ws_keepalive_seconds: float = Field(15.0, gt=0)
    # Websocket admission (server/ws_admission.py): a socket is pending from its upgrade
    # request until the server acknowledges its connection_init.
    ws_init_timeout_seconds: float = Field(10.0, gt=0)
    ws_max_pending_per_address: int = Field(20, ge=1)
    ws_max_pending_per_instance: int = Field(1000, ge=1)
    subscriber_queue_size: int = Field(256, ge=1)
    # How far back a subscription may resume (`after`); history itself is kept.
    event_replay_days: float = Field(7.0, gt=0)
    # off: only the libraries' public paths (Strawberry's view, executor, websocket
    # handlers and document caches), for when a library upgrade breaks a fast path.
    fast_paths: bool = True
    # uvicorn's own name for the same list is accepted too.
    trusted_proxies: str = Field(
        "127.0.0.1,::1", validation_alias=AliasChoices("TRUSTED_PROXIES", "FORWARDED_ALLOW_IPS")
    )
    admin_dist_dir: Path = REPO_ROOT / "web-admin" / "dist"
    graphiql_dist_dir: Path = REPO_ROOT / "web-admin" / "dist-graphiql"

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.app_env != "production":
            return self
        for name in ("secret_key", "webhook_secret"):
            value: SecretStr = getattr(self, name)
            secrets = [s.strip() for s in value.get_secret_value().split(",")]
            if any(s in _DEFAULT_SECRETS or len(s) < 16 for s in secrets):
                raise SettingsError(
                    f"{name.upper()} must be set to a strong secret (16+ characters, not the "
                    "development default) when APP_ENV=production"
                )
        if not self.payment_provider_url and not self.payment_simulator:
            raise SettingsError(
                "PAYMENT_PROVIDER_URL must be set when APP_ENV=production: without it the "
                "built-in payment simulator lets anybody mark an order paid. For a demo only, "
                "PAYMENT_SIMULATOR=on serves the simulator anyway"
            )
        return self

    @model_validator(mode="after")
    def _one_payment_provider(self) -> Settings:
        if self.payment_provider_url and self.payment_simulator:
            raise SettingsError(
                "PAYMENT_SIMULATOR=on and PAYMENT_PROVIDER_URL are both set: choose one "
                "(the simulator is never served beside a real provider)"
            )
        return self

    @property
    def simulator_enabled(self) -> bool:
        """Whether /payments/simulator is served at all."""
        if self.payment_provider_url:
            return False
        return self.payment_simulator or not self.is_production

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @cached_property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @cached_property
    def webhook_secrets(self) -> list[bytes]:
        """Every secret that verifies a webhook: several during a rotation, the first signs."""
        raw = self.webhook_secret.get_secret_value()
        return [s.strip().encode() for s in raw.split(",") if s.strip()]

    @cached_property
    def trusted_proxy_list(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.trusted_proxies.split(",") if p.strip())


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; keyword overrides win (tests, CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]
