# Rosetta's two everyday commands: `make run` serves the dashboard, `make test` runs every test.
# Both build .venv from the pinned requirements first, so they work on a fresh machine.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# `make run` serves the dashboard and runs the engine beside it (both stop together).
.PHONY: install install-dev chromium java run test test-fast fuzz bench lint typecheck format \
	image image-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime

install-dev: $(VENV)/.dev

# The browser tests drive Debian's Chromium; install it when it is missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "Installing Chromium for the browser tests"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The engine runs Debezium on Java 17; install Debian's runtime when there is no java. Without
# it the dashboard still serves, and each pipeline's page says why its engine is not running.
java:
	@command -v java >/dev/null 2>&1 || \
	  { echo "Installing a Java 17 runtime for the engine"; \
	    { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      $(SUDO) apt-get install -y -qq openjdk-17-jre-headless >/dev/null; } || \
	    echo "Could not install Java: pipelines will not run until openjdk-17-jre-headless is installed"; }

run: install java
	$(BIN)/flask db upgrade
	$(BIN)/flask rosetta engine & engine=$$!; \
	  trap 'kill $$engine 2>/dev/null; wait $$engine' EXIT INT TERM; \
	  $(BIN)/flask run --host $(HOST) --port $(PORT)

# Tests run in TEST_WORKERS processes (pytest-xdist), each with its own clusters and instance
# folder; TEST_WORKERS=0 runs them in this one. Three on two cores: much of a test's time is
# spent waiting on its servers, the JVM and the browser (697 tests: 14:52 with three, 17:28
# with two, on one slow day of the 2-core machine). A fourth gains nothing: 698 tests took
# 14:13 with four and 14:12 with three on another slow day, the cores 90% busy with four.
TEST_WORKERS ?= 3

test: install-dev chromium java
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Everything but the tests that start subprocesses, servers or a browser (marked slow).
test-fast: install-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

# The API fuzzed against its OpenAPI document for longer than `make test` does (schemathesis).
fuzz: install-dev
	ROSETTA_FUZZ_EXAMPLES=$${ROSETTA_FUZZ_EXAMPLES:-300} $(BIN)/python -m pytest tests/test_fuzz.py -s $(PYTEST_ARGS)

# The benchmarks start their own PostgreSQL clusters and take minutes; run them by hand.
bench: install-dev
	$(BIN)/python bench/sampler.py
	$(BIN)/python bench/history.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/outage.py
	$(BIN)/python bench/alerts.py
	$(BIN)/python bench/readiness.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/audit.py

# The container image (Dockerfile), built with podman where there is one, else docker.
# IMAGE_BUILD_ARGS adds options, e.g. --build-arg BASE=… for another base image.
CONTAINER ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
IMAGE ?= rosetta:latest

image:
	$(CONTAINER) build $(if $(filter podman,$(CONTAINER)),--format docker) $(IMAGE_BUILD_ARGS) \
	  -t $(IMAGE) .

# Builds the image and runs its roles against the local PostgreSQL without a Docker daemon
# (podman and buildah, chroot isolation; a debootstrap base when no registry answers).
image-test: install-dev
	@{ command -v podman && command -v buildah && command -v debootstrap; } >/dev/null 2>&1 || \
	  { echo "Installing podman, buildah and debootstrap for the image test"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $(SUDO) apt-get install -y -qq podman buildah debootstrap >/dev/null; }
	$(SUDO) $(BIN)/python image/test.py

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Strict type checking of rosetta_web, configured under [tool.mypy] in pyproject.toml.
typecheck: install-dev
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
