# Thin wrappers: the logic lives in hack/ and the Python package.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: all deps venv lock cluster-bins node-bins node-images node-prometheus traefik cluster test test-fast test-training test-node lint crds bench bench-detection bench-training-hooks demo dashboards clean

all: test

deps:
	@bash hack/install-deps.sh

venv:
	@VENV=$(VENV) bash hack/venv.sh

## Re-resolve the pinned dependencies: requirements/ci.txt (CI, make test) and image.txt (the image).
## requirements/torch.txt (the torch extra, installed with ci.txt) is pinned by hand: see its header.
lock: venv
	$(VENV)/bin/pip-compile -q --strip-extras --allow-unsafe --no-emit-find-links --no-emit-index-url --extra test --extra bench \
	  --output-file requirements/ci.txt pyproject.toml requirements/dev.in
	$(VENV)/bin/pip-compile -q --strip-extras --no-emit-find-links --no-emit-index-url \
	  --output-file requirements/image.txt pyproject.toml

cluster-bins:
	@bash hack/k8s/build.sh

## The node's images (pause, operator, demo) as OCI archives, built with mmdebstrap + buildah, cached.
node-images: venv
	@VENV=$(VENV) bash hack/node/images.sh

## Traefik (the node tier's Gateway API data plane), built from its Go module and cached by version.
traefik:
	@bash hack/node/traefik.sh

## Prometheus with Kubernetes discovery (Debian's package has it removed), from its Go module, cached.
node-prometheus:
	@bash hack/node/prometheus.sh

## Everything the node tier (tests/node, docs/local-node.md) needs besides cluster-bins: Traefik,
## Prometheus with Kubernetes discovery and the images, built side by side (hack/node/build-all.sh).
node-bins: venv
	@VENV=$(VENV) bash hack/node/build-all.sh

## Start the local control plane (etcd + kube-apiserver + kube-controller-manager) for manual use.
cluster: deps venv cluster-bins
	$(PY) -m lossgate_dev.devenv.cluster

lint: venv
	$(VENV)/bin/ruff check operator devtools tests bench
	$(VENV)/bin/ruff format --check operator devtools tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## The whole test suite, real API server and real Prometheus included.
test: deps venv cluster-bins node-bins lint
	$(PY) -m pytest

## The node tier alone: a real node, the chart installed with Helm, traffic through Traefik.
test-node: deps venv cluster-bins node-bins
	$(PY) -m pytest tests/node

test-fast: venv
	$(PY) -m pytest tests/unit

## The training tier: torchrun jobs (DDP, FSDP, AMP, Lightning, HF Trainer) against the real Prometheus.
test-training: deps venv cluster-bins
	$(PY) -m pytest tests/training tests/unit/test_step_stats.py tests/unit/test_health_counts.py \
	  tests/adapters/test_prom_training_counts.py

crds: venv
	$(PY) -m lossgate.model.crdgen

## Grafana dashboards (grafana-foundation-sdk) into dashboards/; the chart ships them (docs/dashboards.md).
dashboards: venv
	$(PY) -m lossgate_dev.dashboards dashboards helm/lossgate/files/dashboards

bench: bench-detection

bench-detection: venv
	$(PY) bench/detection.py

bench-training-hooks: venv
	$(PY) bench/training_hooks.py

demo: deps venv cluster-bins
	$(VENV)/bin/lossgate-demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
