# syntax=docker/dockerfile:1
# The lossgate operator image (docs/helm.md#the-image):
#   docker build -t ghcr.io/lossgate/lossgate:0.1.0 .
#   kind load docker-image ghcr.io/lossgate/lossgate:0.1.0 --name lossgate
# Stage 1 builds wheels for lossgate and its dependencies; stage 2 installs them into a slim Python
# with no compiler, no pip cache and no build tools, and runs as an unprivileged user. Only the
# operator, the CLI and lossgate.instrument are in it; the demo model servers of the quickstart have
# their own image (devtools/Dockerfile.demo).
# The local node builds the same file with buildah and --build-arg BASE=lossgate.local/python-base:3.11,
# a Python rootfs made from Debian packages where no registry is reachable (docs/local-node.md#images).

ARG PYTHON_VERSION=3.11
ARG BASE=python:${PYTHON_VERSION}-slim-bookworm

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies at the versions locked in requirements/image.txt (make lock), in a layer of their
# own: a change to the code leaves it cached and rebuilds only lossgate's wheel.
COPY requirements/image.txt requirements/
RUN pip wheel --wheel-dir /wheels/deps -r requirements/image.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /wheels/lossgate .

FROM ${BASE}
LABEL org.opencontainers.image.title="lossgate" \
      org.opencontainers.image.description="Loss-aware canary rollouts of ML models on Kubernetes (kopf operator)" \
      org.opencontainers.image.source="https://github.com/lossgate/lossgate" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Install from the wheels only (no index, nothing compiled): the dependencies first (a cached layer),
# then lossgate, whose requirements are then already met; then drop the wheels and pip itself.
COPY --from=build /wheels/deps /wheels/deps
RUN pip install --no-index /wheels/deps/*.whl \
    && rm -rf /wheels
COPY --from=build /wheels/lossgate /wheels/lossgate
RUN pip install --no-index /wheels/lossgate/*.whl \
    && rm -rf /wheels \
    && pip uninstall -y pip setuptools wheel \
    && groupadd --system --gid 10001 lossgate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin lossgate
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
# kopf's liveness endpoint (the chart's probe) and the operator's metrics.
EXPOSE 8080 8090
# `lossgate operator` runs kopf (kopf.run) with lossgate's handlers. The chart's container args
# replace CMD and start with the same subcommand; the CLI (`lossgate get ...`) runs with other args.
ENTRYPOINT ["lossgate"]
CMD ["operator", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=8090"]
