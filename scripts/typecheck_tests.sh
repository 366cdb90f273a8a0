#!/usr/bin/env bash
# mypy on tests/ as pytest imports it (rootdir-relative, "prepend" import mode): tests/ is an
# import root (`from localcluster.harness import ...`, `from suite.suite_helpers import ...`), and
# each folder below whose tests import their siblings by bare name (`from state_helpers import ...`)
# is one more root. Those folders each have a conftest.py, so each is checked in a run of its own
# (one run cannot hold two modules named `conftest`). Usage: typecheck_tests.sh PYTHON CACHE_DIR
set -u
PY=${1:-.venv/bin/python}
CACHE=${2:-build/typecheck/.mypy_cache}
LEAVES="tests/cli tests/executor tests/images tests/offers tests/state tests/workloads/etcd tests/workloads/mysql tests/workloads/redis"
status=0
excludes=()
for leaf in $LEAVES; do excludes+=(--exclude "^$leaf/"); done
MYPYPATH=tests "$PY" -m mypy --cache-dir "$CACHE" "${excludes[@]}" tests || status=1
for leaf in $LEAVES; do
    MYPYPATH="tests:$leaf" "$PY" -m mypy --cache-dir "$CACHE" "$leaf" || status=1
done
exit $status
