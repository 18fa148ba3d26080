# The add-on image, built by the Home Assistant Supervisor (build.yaml picks the base per arch).
# Build context is the repository root: the server package plus the shared protocol package.
ARG BUILD_FROM=ghcr.io/home-assistant/amd64-base-python:3.13-alpine3.21
FROM ${BUILD_FROM}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/thermo_bridge
COPY pyproject.toml README.md ./
COPY addon/thermo_bridge_server ./addon/thermo_bridge_server
# The protocol's one copy lives in the integration's folder; pyproject.toml maps the import
# name thermo_bridge_protocol onto it.
COPY custom_components/thermo_bridge/protocol ./custom_components/thermo_bridge/protocol
RUN pip install . \
    && python -c "import thermo_bridge_server, thermo_bridge_protocol"

# /data is the add-on's persistent volume: options.json, the SQLite database, the dev key.
WORKDIR /data
EXPOSE 8099
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8099/health', timeout=4).status != 200)"]
CMD ["thermo-bridge-server"]

LABEL io.hass.type="addon" \
      io.hass.version="0.1.0" \
      org.opencontainers.image.title="thermo_bridge server" \
      org.opencontainers.image.source="https://github.com/thermo-bridge/thermo_bridge"
