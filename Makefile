# mesos-stateful. `make run` starts the suite locally; `make test` installs what it needs and
# runs every test. See README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# Where typecheck keeps its cache (set it to run several checks at once).
TC ?= build/typecheck

.PHONY: setup protos lint typecheck test run clean images docker-engine conformance
# `make run RUNTIME=docker`: members run as Docker containers (needs `make images`).
RUNTIME ?=

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh scripts/install_system_deps.sh scripts/install_http_parser.sh \
		services/redis-node/package-lock.json
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

protos: setup
	$(PY) scripts/gen_protos.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	cd protos && ../$(VENV)/bin/buf lint

# mypy reads the plain checkout: mypy_path (pyproject.toml) names the two folders of the
# mesos_stateful namespace package.
typecheck: setup
	$(PY) -m mypy --cache-dir $(TC)/.mypy_cache services/mesos_stateful executor/mesos_stateful

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The WorkloadService conformance test against a running service in any language:
# `make conformance WORKLOAD=host:port` (without WORKLOAD: the Python and the Node.js Redis).
conformance: setup
	STATEFUL_CONFORMANCE_WORKLOAD=$(WORKLOAD) $(PY) -m pytest tests/conformance/test_workload_service.py $(PYTEST_ARGS)

run: setup
	$(PY) -m mesos_stateful.suite $(if $(RUNTIME),--runtime $(RUNTIME))

# A Docker engine that answers: installs Debian's docker.io and starts dockerd when none answers
# (never touches one that runs), and Compose v2.
docker-engine: setup
	VENV=$(VENV) bash scripts/docker_engine.sh

# The suite image and one image per built-in workload, from a local base (nothing is pulled).
images: docker-engine
	VENV=$(VENV) bash scripts/build_images.sh

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache state *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
