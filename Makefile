# Two commands: `make run` and `make test`. Both set up what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

SIM_SCHEDULES ?= 10000
SIM_SEED ?= 1  # make test runs a known range; `make sim` alone takes a fresh seed

.PHONY: docs sim mutants run test test-unit test-deploy test-cluster cluster cluster-stop deploy-tools image soak bench services services-stop lint venv sample-alert demo

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

services:
	deploy/services.sh start

services-stop:
	deploy/services.sh stop

test: venv services  # the console's browser tests need Debian's chromium: installed once
	deploy/tools.sh chromium
	$(BIN)/pytest
	$(MAKE) sim ARGS="--schedules $(SIM_SCHEDULES) --seed $(SIM_SEED) --jobs 2"
	$(MAKE) mutants

sim: venv  # the worker under the deterministic simulator: ARGS="--seed S" replays one schedule
	$(BIN)/python -m sim $(ARGS)

mutants: venv  # each mutant of the worker must be caught by the simulator
	$(BIN)/python -m sim.mutants $(ARGS)

test-unit: venv  # no services needed: seconds
	$(BIN)/pytest tests/unit

image:  # the container image, built with buildah (deploy/image.sh installs what it needs)
	deploy/image.sh build

deploy-tools:  # podman, buildah, promtool, helm (pinned): installed once
	deploy/tools.sh all

test-deploy: venv services deploy-tools image  # the image as containers, Helm chart, alerts
	$(BIN)/pytest -m deploy tests/deploy

soak: venv services
	$(BIN)/pytest -m soak -s

cluster:  # a three-node RabbitMQ cluster on 5681-5683, beside the single node (idempotent)
	deploy/cluster.sh start

cluster-stop:
	deploy/cluster.sh stop

test-cluster: venv services cluster  # ingest and two workers against it: a node killed, a rolling restart, a node paused
	$(BIN)/pytest -m cluster tests/cluster -s

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

bench: venv services $(BIN)/.bench-installed
	$(BIN)/python -m bench $(ARGS)

# Zensical is pre-1.0: pinned (0.0.73, the last whose theme ships in the one package; 0.1's
# zensical-ui is not on the package index these machines reach).
$(BIN)/.docs-installed: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[dev,docs]'
	touch $@

docs: venv $(BIN)/.docs-installed  # the documentation site, strictly, into .site/
	$(BIN)/python docs/generate.py
	$(BIN)/zensical build --strict --clean

lint: venv  # ruff, mypy --strict, and the AsyncAPI document by the AsyncAPI project's CLI
	$(BIN)/ruff check .
	$(BIN)/mypy
	deploy/tools.sh asyncapi
	SUPPRESS_NO_CONFIG_WARNING=1 $$(deploy/tools.sh asyncapi-path) validate docs/asyncapi.yaml

run: venv services
	deploy/run-local.sh

sample-alert: venv
	$(BIN)/python deploy/devkit.py send $(ARGS)

demo: venv services
	$(BIN)/python deploy/demo.py $(ARGS)
