# xcorrflow — `make help` lists the targets. Every target installs what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
XF     := $(BIN)/xcorrflow
STACK  ?= native
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k broker -x"`.
PYTEST_ARGS ?=
# Extra benchmark arguments, e.g. `make bench BENCH_ARGS="--rounds 1 --no-live"`.
BENCH_ARGS ?=
# Extra chaos arguments, e.g. `make chaos CHAOS_ARGS="--only kafka-restart"` (`--list` names the scenarios).
CHAOS_ARGS ?=
# Extra scaling-benchmark arguments, e.g. `make bench-scale BENCH_SCALE_ARGS="--stations 130,260 --rounds 1"`.
BENCH_SCALE_ARGS ?=

.PHONY: help venv up down status clean-data topics dashboard test test-unit test-integration test-tools images \
	test-containers demo bench bench-scale bench-kernel bench-s3 bench-preprocess chaos lint fmt clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed ## create the project venv and install xcorrflow with its dev extras

up: venv ## start Kafka (KRaft), the S3 server and Prometheus on 127.0.0.1 (STACK=compose for docker compose)
	$(XF) stack up --stack $(STACK)

down: venv ## stop exactly what `make up` started
	$(XF) stack down --stack $(STACK)

status: venv ## print each service's endpoint and health as JSON
	$(XF) status --json

clean-data: venv ## stop the stack and wipe its data (Kafka logs, objects, metrics)
	$(XF) stack clean-data --stack $(STACK)

topics: up ## create the pipeline's topics (idempotent)
	$(XF) topics create

dashboard: up ## print the URL of the pipeline console (Prometheus console templates, no Grafana needed)
	@$(XF) stack dashboard

test-tools: ## Debian packages the tests drive: chromium (console screenshots), promtool (alert rule tests)
	@infra/ensure-packages.sh chromium fonts-dejavu-core prometheus

test: venv test-tools ## run the whole suite against a real local stack (starts it)
	$(XF) stack up --stack $(STACK)
	@eval "$$($(XF) stack env)"; $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ -n "$$PYTEST_RC_FILE" ]; then echo $$rc > "$$PYTEST_RC_FILE"; fi; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

test-unit: venv test-tools ## run the unit tests only (no services)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: up test-tools ## run the integration tests against the running stack
	eval "$$($(XF) stack env)" && $(BIN)/pytest tests/integration $(PYTEST_ARGS)

images: venv ## build the test images (Kafka, S3) with podman from a debootstrapped Debian; no registry needed
	@infra/ensure-packages.sh podman runc debootstrap
	$(XF) stack images

test-containers: $(if $(DOCKER_HOST),venv,images) ## run tests/containers: testcontainers starts Kafka and S3 in podman (or DOCKER_HOST)
	@rc=0; TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_CONNECTION_MODE=docker_host \
	  $(BIN)/pytest tests/containers $(PYTEST_ARGS) || rc=$$?; \
	  if [ -n "$$PYTEST_RC_FILE" ]; then echo $$rc > "$$PYTEST_RC_FILE"; fi; exit $$rc

demo: up ## end-to-end demo on the local stack
	$(XF) demo

bench: up ## pipeline benchmark: streaming vs cnf vs barrier vs in-process, commit latency, CPU budget (bench/results/)
	$(BIN)/python -m bench.pipeline $(BENCH_ARGS)
	$(BIN)/python -m bench.commit_latency
	$(BIN)/python -m bench.cpu_budget

chaos: venv ## inject issue 10's faults into runs on a private stack (ports 28xxx) -> bench/results/chaos.{json,md}
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

bench-scale: venv ## scaling benchmark, N = 130/260/520 on its own stack (27xxx ports): bench/results/scale.{json,md,png}
	$(BIN)/python -m bench.scale $(BENCH_SCALE_ARGS)

bench-kernel: venv ## DSP kernel benchmark (writes bench/results/kernel.json)
	$(BIN)/python -m bench.kernel

bench-s3: up ## S3 access paths for zarr chunks: minio, obstore, s3fs, zarr stores (bench/results/s3_access.*)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench.s3_access $(BENCH_ARGS)

bench-preprocess: up ## preprocess worker per station-hour against the DSP alone, same run (bench/results/preprocess_worker.json)
	$(BIN)/python -m bench.preprocess_worker $(BENCH_ARGS)

lint: venv ## ruff, mypy and the layer contracts (import-linter, [tool.importlinter] in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy contracts storage dsp results producers consumers commit_broker xcorrflow bench
	$(BIN)/lint-imports

fmt: venv ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## remove the venv and caches (keeps stack data; see clean-data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
