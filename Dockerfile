# syntax=docker/dockerfile:1
# mcgw, the microcurrent BLE gateway, as a container image.
#
# Multi-arch: python:3.11-slim exists for linux/amd64 and linux/arm64 (Raspberry Pi 3/4/5 on a
# 64-bit OS), and every dependency ships wheels for both, so no compiler is needed:
#   docker buildx build --platform linux/amd64,linux/arm64 -t mcgw:local .
# Runs as an unprivileged user; history lives on the /data volume. See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a virtualenv in /opt/mcgw, copied whole into the runtime image ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/mcgw
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so editing the code reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && /opt/mcgw/bin/pip install --requirement /tmp/requirements.txt

# README.m[d]: a glob, so the build also works in a tree without a README yet.
COPY pyproject.toml README.m[d] ./
COPY ble ./ble
COPY gateway ./gateway
COPY api ./api
COPY mcgw ./mcgw
RUN /opt/mcgw/bin/pip install --no-deps . \
    && /opt/mcgw/bin/mcgw --help > /dev/null

# ---- runtime ----
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="mcgw" \
      org.opencontainers.image.description="Hub connecting microcurrent facial devices over BLE to phone apps" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed uid/gid so the /data volume keeps its owner across image upgrades.
ARG MCGW_UID=10001
RUN groupadd --system --gid "${MCGW_UID}" mcgw \
    && useradd --system --uid "${MCGW_UID}" --gid mcgw --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin mcgw \
    && mkdir -p /data \
    && chown mcgw:mcgw /data

COPY --from=build /opt/mcgw /opt/mcgw

ENV PATH=/opt/mcgw/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MCGW_DB__URL=sqlite:////data/mcgw.db

VOLUME ["/data"]
WORKDIR /data
USER mcgw:mcgw
EXPOSE 8420

# Python's urllib, not curl: the slim image has no curl. Follows MCGW_API__PORT if it is changed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/v1/health' % os.environ.get('MCGW_API__PORT', '8420'), timeout=4)"]

ENTRYPOINT ["mcgw"]
CMD ["serve"]
