# mesos-stateful. `make run` starts the suite locally; `make test` installs what it needs and
# runs every test. See README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# Where typecheck keeps its cache (set it to run several checks at once).
TC ?= build/typecheck

.PHONY: setup protos lint typecheck typecheck-tests test test-fast run clean images docker-engine conformance
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
# mesos_stateful namespace package. Then the tests (typecheck-tests).
typecheck: setup
	$(PY) -m mypy --cache-dir $(TC)/.mypy_cache services/mesos_stateful executor/mesos_stateful
	bash scripts/typecheck_tests.sh $(PY) $(TC)/.mypy_cache

# mypy on tests/ alone (the pydantic plugin types settings constructors; see
# scripts/typecheck_tests.sh for how pytest's import roots map to mypy runs).
typecheck-tests: setup
	bash scripts/typecheck_tests.sh $(PY) $(TC)/.mypy_cache

# `make test TEST_WORKERS=3` runs the tests in 3 processes (pytest-xdist): the tests of one file in
# one worker, every file of the Docker engine in one (tests/conftest.py). The default, 0, is one
# process: on a loaded 2-core machine parallel runs still fail timing-bound tests (README).
TEST_WORKERS ?= 0
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The WorkloadService conformance test against a running service in any language:
# `make conformance WORKLOAD=host:port` (without WORKLOAD: the Python and the Node.js Redis).
conformance: setup
	STATEFUL_CONFORMANCE_WORKLOAD=$(WORKLOAD) $(PY) -m pytest tests/conformance/test_workload_service.py $(PYTEST_ARGS)

# `make test-fast`: the pure-logic tests (no servers, no processes), under a minute: the files below,
# and in them only the tests marked `unit` (tests/conftest.py: no server fixture, not `slow` or
# `servers`). A new pure-logic test file goes in this list.
FAST_TESTS := \
	tests/api/test_protos.py \
	tests/cli/test_render_health.py \
	tests/cli/test_render_launch_failures.py \
	tests/cli/test_render_maintenance.py \
	tests/common/test_grpc_errors.py \
	tests/conformance/test_framework_builders.py \
	tests/console/test_render.py \
	tests/deploy/test_deploy_compose_config.py \
	tests/deploy/test_deploy_executor_container.py \
	tests/deploy/test_observability.py \
	tests/executor/test_launch.py \
	tests/executor/test_sender.py \
	tests/gateway/test_gateway_runtime.py \
	tests/gateway/test_gateway_validation.py \
	tests/lifecycle/test_docker_launch_spec.py \
	tests/lifecycle/test_drain_planner.py \
	tests/lifecycle/test_plan_trace_units.py \
	tests/lifecycle/test_planner.py \
	tests/lifecycle/test_planner_launch_failures.py \
	tests/lifecycle/test_settings.py \
	tests/localcluster/test_checkpoint.py \
	tests/localcluster/test_encoding.py \
	tests/localcluster/test_validation_rules.py \
	tests/offers/test_inverse_offers_unit.py \
	tests/offers/test_matching.py \
	tests/offers/test_matching_avoid.py \
	tests/offers/test_mesos.py \
	tests/offers/test_placement_rules.py \
	tests/offers/test_release_safety.py \
	tests/offers/test_volumes.py \
	tests/state/test_key_root.py \
	tests/state/test_records.py \
	tests/state/test_replicas.py \
	tests/testing/test_poll.py \
	tests/workloads/etcd/test_etcd_config.py \
	tests/workloads/etcd/test_etcd_docker_config.py \
	tests/workloads/mysql/test_mysql_config.py \
	tests/workloads/mysql/test_mysql_docker_config.py \
	tests/workloads/mysql/test_mysql_gtid.py \
	tests/workloads/redis/test_redis_config.py \
	tests/workloads/redis/test_redis_docker_config.py

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m unit $(FAST_TESTS) $(PYTEST_ARGS)

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
