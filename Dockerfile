# syntax=docker/dockerfile:1
#
# Order service image: the admin UI is built with Node, the API runs on
# python:3.11-slim as an unprivileged user. No secret is baked in: SECRET_KEY,
# WEBHOOK_SECRET, DATABASE_URL and REDIS_URL come from the environment at run
# time (compose.yml, or a Kubernetes Secret).
#
#   docker build -t order-service:local .

ARG NODE_IMAGE=node:20-bookworm-slim
ARG PYTHON_IMAGE=python:3.11-slim

# --- admin UI and GraphiQL: web-admin/ -> /src/web-admin/dist, dist-graphiql --
FROM ${NODE_IMAGE} AS admin-build
WORKDIR /src/web-admin
ENV CI=true \
    NPM_CONFIG_AUDIT=false \
    NPM_CONFIG_FUND=false \
    NPM_CONFIG_UPDATE_NOTIFIER=false
# The lock file alone decides the dependency layer, so source edits reuse it.
COPY web-admin/package.json web-admin/package-lock.json ./
RUN npm ci
COPY web-admin/ ./
# GraphiQL's default tab is README's walk-through, read at build time (../README.md).
COPY README.md /src/README.md
RUN npm run build

# --- Python package, installed into a relocatable virtualenv -----------------
FROM ${PYTHON_IMAGE} AS python-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# .dockerignore keeps tests, caches, web-admin's node_modules/dist and any
# .env file out of the context.
COPY . .
# The otel extra: OpenTelemetry tracing, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.
# (hadolint takes ".[otel]" for an unpinned package: it is this project, with an extra.)
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[otel]" \
    && order-service --help > /dev/null

# --- runtime -----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# X-Forwarded-For/-Proto are only believed from these peers: uvicorn's
# FORWARDED_ALLOW_IPS, and TRUSTED_PROXIES, the app setting that feeds it.
# The image trusts loopback alone; compose.yml and the Kubernetes ConfigMap
# set the address of their proxy. Never "*".
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production \
    LOG_FORMAT=json \
    ADMIN_DIST_DIR=/app/web-admin/dist \
    GRAPHIQL_DIST_DIR=/app/web-admin/dist-graphiql \
    FORWARDED_ALLOW_IPS=127.0.0.1 \
    TRUSTED_PROXIES=127.0.0.1

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin app

COPY --from=python-build /opt/venv /opt/venv
# Owned by root and read-only for the app user: the server only reads them.
COPY --from=admin-build /src/web-admin/dist /app/web-admin/dist
# GraphiQL: served at GET /graphql only outside production (APP_ENV=development, say).
COPY --from=admin-build /src/web-admin/dist-graphiql /app/web-admin/dist-graphiql

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# Liveness only (/health); readiness (/ready: database + Redis) is for the
# orchestrator's routing decisions, not for restarting the container.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]

CMD ["order-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
