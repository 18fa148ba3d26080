# The add-on image. The Supervisor builds it on the user's device with this folder (the
# repository root) as the context, passing BUILD_FROM only for legacy build.yaml add-ons: the
# default below is the base image. Version, arch and type labels come from the Supervisor.
ARG BUILD_FROM=ghcr.io/home-assistant/base-python:3.13-alpine3.24
FROM ${BUILD_FROM}

# Under the base image's s6-overlay /init, `docker stop` ends in SIGTERM to every process and
# SIGKILL S6_KILL_GRACETIME ms later (default 3 s). The server needs up to 10 s to drain HTTP
# requests, then flushes the store and disconnects: give it 30 s (config.yaml's timeout is
# longer still). There are no s6 services; the services' grace is raised alike.
ENV S6_KILL_GRACETIME=30000 \
    S6_SERVICES_GRACETIME=30000 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/thermo_bridge
# Pinned, hash-checked wheels (scripts/lock-addon writes the file): every device builds the
# same image and nothing is compiled on it.
COPY addon-requirements.lock ./
RUN pip install --only-binary :all: --require-hashes -r addon-requirements.lock

COPY pyproject.toml README.md ./
COPY addon/thermo_bridge_server ./addon/thermo_bridge_server
# The protocol's one copy lives in the integration's folder; pyproject.toml maps the import
# name thermo_bridge_protocol onto it.
COPY custom_components/thermo_bridge/protocol ./custom_components/thermo_bridge/protocol
RUN pip install --no-deps --no-build-isolation . \
    && python -c "import thermo_bridge_server.app, thermo_bridge_protocol"

# /data is the add-on's persistent volume: options.json, the SQLite database, the keys.
WORKDIR /data
EXPOSE 8099
# Liveness only: the process runs and answers HTTP. A broker or database that is down shows on
# /health (readiness) and must not make the Supervisor restart the add-on.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--max-time", "4", "--output", "/dev/null", "http://127.0.0.1:8099/health/live"]
CMD ["thermo-bridge-server"]

LABEL org.opencontainers.image.title="Thermo Bridge" \
      org.opencontainers.image.description="MQTT thermostats and sensors for web apps, over an Auth0-secured REST API" \
      org.opencontainers.image.source="https://github.com/thermo-bridge/thermo_bridge" \
      org.opencontainers.image.licenses="Apache-2.0"
