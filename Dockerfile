# syntax=docker/dockerfile:1.7
# objmig: one image for the operator and the worker pods (ENTRYPOINT objmig).
#
#   docker build -t objmig:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# tests/unit/test_packaging_static.py runs the same two pip steps outside Docker (build the
# wheel, install it into a fresh venv, run `objmig --version` and `objmig worker --help`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- stage 1: build objmig's wheel ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /dist .

# --- stage 2: runtime -------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="objmig" \
      org.opencontainers.image.description="Kubernetes operator and CLI that migrates objects between S3-compatible stores, resumably and verified." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/objmig/objmig" \
      org.opencontainers.image.documentation="https://github.com/objmig/objmig/blob/main/docs/install.md"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/objmig/bin:$PATH
# The wheel is bind-mounted from the build stage, so it never becomes a layer of this image.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python -m venv /opt/objmig \
    && /opt/objmig/bin/pip install /dist/objmig-*.whl \
    && groupadd --system --gid 10001 objmig \
    && useradd --system --uid 10001 --gid objmig --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin objmig \
    && objmig --version
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["objmig"]
CMD ["--help"]
