# cniscope — the whole setup on a fresh Debian machine, as root: `make demo` and `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
CNISCOPE := $(VENV)/bin/cniscope
STAMP := $(VENV)/.installed
ROOTS := proto agent collector tui core

.PHONY: setup host venv proto test test-fast lint typecheck demo demo-down bench clean kube-harness image

setup: host venv

host:
	@sh scripts/host-setup.sh

# bcc lives in Debian's python3-bpfcc, so the venv is built on /usr/bin/python3 with system site-packages.
$(STAMP): pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: host $(STAMP)

# Regenerate the gRPC/protobuf stubs (pinned grpcio-tools + mypy-protobuf). Never edit them by hand.
proto: venv
	@$(PY) -m cniscope.api.codegen proto

# The lab's Kubernetes (etcd, kube-apiserver, kube-controller-manager, kube-proxy, kubectl): one Go
# binary built from core/kube-harness into .cache/kube-harness/<key>/cniscope-kube, rebuilt only when
# its go.mod, go.sum or sources change (a first build takes minutes; then this is a no-op).
kube-harness:
	@scripts/build-kube-harness.sh

lint: venv
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/lint-imports --no-cache
	@$(VENV)/bin/mypy $(ROOTS) tests

test: setup lint
	@scripts/build-kube-harness.sh --if-go >/dev/null
	@$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: venv
	@$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

# KUBERNETES=1: the lab runs a real control plane and kube-proxy, and daemonset/ is applied to it
demo: setup
	@$(CNISCOPE) demo $(if $(KUBERNETES),--kubernetes)

demo-down: venv
	@$(CNISCOPE) lab down

# Benchmarks: every benchmarks/bench_*.py script, one after the other (they measure, so never in
# parallel); each prints its figures as ratios against a baseline measured in the same run.
bench: setup
	@set -e; for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f; done

# The container image for linux/amd64 and linux/arm64, tagged with the package version, pushed to
# $(IMAGE) (your registry: `docker login` first). PUSH=0 builds this machine's platform only and loads
# it into the local image store instead. Needs docker buildx (and QEMU or a builder per platform).
IMAGE     ?= ghcr.io/cniscope/cniscope
PLATFORMS ?= linux/amd64,linux/arm64
PUSH      ?= 1
VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	@test -n "$(VERSION)" || { echo "no version in pyproject.toml" >&2; exit 1; }
	docker buildx build -f daemonset/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) \
	  $(if $(filter 1,$(PUSH)),--platform $(PLATFORMS) --push,--load) .
	@echo "image $(IMAGE):$(VERSION); point the install at it: README, Kubernetes, 'Bring your own registry'"

clean:
	-@$(CNISCOPE) lab down 2>/dev/null
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
