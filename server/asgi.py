"""`server.asgi:app` for uvicorn workers: settings from the environment."""

from __future__ import annotations

from infra.logs import configure_logging
from infra.settings import load_settings
from server.app import create_app

_settings = load_settings()
configure_logging(_settings.log_level, _settings.log_format)
app = create_app(_settings, freeze_heap=True)
