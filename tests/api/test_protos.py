"""The API definition: generated code is fresh and the protos pass buf lint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_matches_protos() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_is_clean() -> None:
    buf = Path(sys.executable).parent / "buf"
    result = subprocess.run([str(buf), "lint"], cwd=REPO / "protos", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_imports_under_the_root() -> None:
    from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc, types_pb2

    assert types_pb2.DESCRIPTOR.package == "stateful.v1"
    assert hasattr(instance_service_pb2_grpc, "InstanceServiceStub")
