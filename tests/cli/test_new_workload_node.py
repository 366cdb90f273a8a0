"""``statefulctl new-workload NAME --lang node``: the Node.js skeleton is written, its protos are
the suite's, and once ``npm install``-ed it serves, registers in a real state service and passes
the WorkloadService conformance test (tests/conformance/test_workload_service.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from mesos_stateful.api.stateful.v1 import state_service_pb2, types_pb2, workload_service_pb2
from mesos_stateful.testing.node_workload import REDIS_NODE_DIR, NodeWorkload, node_binary
from mesos_stateful.testing.state import StateService

ROOT = Path(__file__).resolve().parents[2]
STATEFULCTL = str(Path(sys.executable).parent / "statefulctl")
TIMEOUT = 300.0
FILES = {
    "README.md",
    "package.json",
    "src/main.js",
    "src/description.js",
    "src/config.js",
    "src/servicer.js",
    "lib/errors.js",
    "lib/context.js",
    "lib/registration.js",
    "lib/service.js",
    "member/server.js",
    "proto/stateful/v1/types.proto",
    "proto/stateful/v1/workload_service.proto",
    "proto/stateful/v1/state_service.proto",
}


CONFORMANCE = "tests/conformance/test_workload_service.py"


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def statefulctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STATEFULCTL, *args], capture_output=True, text=True, timeout=120, check=False)


def scaffold(tmp_path: Path, *args: str) -> Path:
    result = statefulctl("new-workload", "demo-db", "--lang", "node", "--dir", str(tmp_path), *args)
    assert result.returncode == 0, result.stderr
    assert "npm install && STATEFUL_DEMO_DB_STATE_ENDPOINT=127.0.0.1:7100 node src/main.js" in result.stdout
    return tmp_path / "demo_db"


@pytest.mark.parametrize(
    ("topology", "enum"), [("master-replica", "TOPOLOGY_MASTER_REPLICA"), ("peers", "TOPOLOGY_PEERS")]
)
def test_writes_a_node_skeleton_whose_javascript_parses(tmp_path: Path, topology: str, enum: str) -> None:
    folder = scaffold(tmp_path, "--topology", topology)
    written = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert written == FILES
    package = json.loads((folder / "package.json").read_text())
    assert package["name"] == "demo-db-workload"
    assert f"topology: '{enum}'" in (folder / "src" / "description.js").read_text()
    assert "STATEFUL_DEMO_DB_" in (folder / "src" / "main.js").read_text()
    for path in sorted(folder.rglob("*.js")):
        check = subprocess.run(
            [node_binary(), "--check", str(path)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, f"{path}: {check.stderr}"
    # The existing folder is refused without --force (one line, no traceback).
    again = statefulctl("new-workload", "demo-db", "--lang", "node", "--dir", str(tmp_path))
    assert again.returncode != 0 and "--force" in again.stderr and "Traceback" not in again.stderr


def test_unknown_language_is_a_usage_error(tmp_path: Path) -> None:
    result = statefulctl("new-workload", "demo", "--lang", "cobol", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "demo").exists()


def test_dependencies_are_pinned_as_the_redis_node_workloads(tmp_path: Path) -> None:
    """The skeleton's exact versions are those services/redis-node runs and tests."""
    mine = json.loads((scaffold(tmp_path) / "package.json").read_text())["dependencies"]
    theirs = json.loads((REDIS_NODE_DIR / "package.json").read_text())["dependencies"]
    assert mine and all(v[0].isdigit() for v in mine.values()), f"not pinned exactly: {mine}"
    assert {k: theirs.get(k) for k in mine} == mine


def _normalized(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    out = {}
    for f in files:
        f.ClearField("options")
        f.ClearField("source_code_info")
        messages = list(f.message_type)
        while messages:
            m = messages.pop()
            messages += m.nested_type
            for field in m.field:
                field.ClearField("json_name")
        out[f.name] = f
    return out


def test_printed_protos_compile_to_the_suites_descriptors(tmp_path: Path) -> None:
    folder = scaffold(tmp_path)
    out = tmp_path / "set.pb"
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        [
            "protoc",
            f"-I{folder / 'proto'}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            "stateful/v1/types.proto",
            "stateful/v1/workload_service.proto",
            "stateful/v1/state_service.proto",
        ]
    )
    assert code == 0
    printed = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    originals = []
    for module in (types_pb2, workload_service_pb2, state_service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        originals.append(proto)
    mine, theirs = _normalized(list(printed.file)), _normalized(originals)
    assert mine.keys() == theirs.keys()
    for name in theirs:
        assert mine[name] == theirs[name], name


@pytest.mark.slow
async def test_installed_skeleton_registers_and_passes_the_conformance_test(
    tmp_path: Path, state_service: StateService, state_client: object
) -> None:
    folder = scaffold(tmp_path)
    npm = shutil.which("npm")
    assert npm, "npm is not installed: run `make setup`"
    install = await asyncio.to_thread(
        _run, [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], folder
    )
    assert install.returncode == 0, install.stderr
    service = NodeWorkload(
        folder,
        "STATEFUL_DEMO_DB_",
        state_service.endpoint,
        tmp_path / "logs",
        {"lease_ttl_seconds": 6},
        "demo-db",
    )
    await service.start()
    try:
        await service.wait_registered(state_client, "demo-db")
        env = {**os.environ, "STATEFUL_CONFORMANCE_WORKLOAD": service.endpoint}
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", CONFORMANCE]
        run = await asyncio.to_thread(_run, argv, ROOT, env)
        assert run.returncode == 0, run.stdout[-6000:]
        assert "passed" in run.stdout and "[redis-" not in run.stdout
    finally:
        await service.stop()
    # SIGTERM revoked its lease: the registration is gone.
    assert await state_client.find(state_service_pb2.KIND_WORKLOAD, "demo-db") is None  # type: ignore[attr-defined]
