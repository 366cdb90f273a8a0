# mesos-stateful. `make run` starts the suite locally; `make test` installs what it needs and
# runs every test. See README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# Where typecheck builds its tree of links (set it to run several checks at once).
TC ?= build/typecheck

.PHONY: setup protos lint typecheck test run clean images docker-engine conformance
# `make run RUNTIME=docker`: members run as Docker containers (needs `make images`).
RUNTIME ?=

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py scripts/setup.sh scripts/install_system_deps.sh scripts/install_http_parser.sh \
		services/redis-node/package-lock.json
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

protos: setup
	$(PY) scripts/gen_protos.py

lint: setup
	$(VENV)/bin/ruff check .
	cd protos && ../$(VENV)/bin/buf lint

# mypy cannot follow the package-dir mapping of setup.py, so it checks a tree of links laid out
# the way Python imports the code.
typecheck: setup
	rm -rf $(TC) && mkdir -p $(TC)/mesos_stateful
	for f in services/*; do ln -s $(CURDIR)/$$f $(TC)/mesos_stateful/; done
	ln -s $(CURDIR)/executor $(TC)/mesos_stateful/executor
	cd $(TC) && MYPYPATH=. $(CURDIR)/$(PY) -m mypy --config-file $(CURDIR)/pyproject.toml \
		--cache-dir .mypy_cache -p mesos_stateful

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
