# syntax=docker/dockerfile:1
# The lossgate operator image (docs/helm.md#the-image):
#   docker build -t ghcr.io/lossgate/lossgate:0.1.0 .
#   kind load docker-image ghcr.io/lossgate/lossgate:0.1.0 --name lossgate
# Stage 1 builds wheels for lossgate and its dependencies; stage 2 installs them into a slim Python
# with no compiler, no pip cache and no build tools, and runs as an unprivileged user. Only the
# operator, the CLI and lossgate.instrument are in it; the demo model servers of the quickstart have
# their own image (devtools/Dockerfile.demo).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/image.txt requirements/
COPY operator/ operator/
# The dependencies at the versions locked in requirements/image.txt (make lock), then lossgate.
RUN pip wheel --wheel-dir /wheels -r requirements/image.txt .

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="lossgate" \
      org.opencontainers.image.description="Loss-aware canary rollouts of ML models on Kubernetes (kopf operator)" \
      org.opencontainers.image.source="https://github.com/lossgate/lossgate" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# Install from the wheels only (no index, nothing compiled), then drop the wheels and pip itself.
RUN pip install --no-index /wheels/*.whl \
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
