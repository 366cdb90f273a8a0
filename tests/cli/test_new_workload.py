"""``statefulctl new-workload``: the skeleton is written, guarded, lint-clean, and serves a working
Config (its placeholder member really runs and gets ready)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
STATEFULCTL = str(VENV_BIN / "statefulctl")
RUFF = str(VENV_BIN / "ruff")
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
FILES = {
    "__init__.py",
    "__main__.py",
    "config.py",
    "description.py",
    "servicer.py",
    "settings.py",
    "README.md",
}
TIMEOUT = 120.0


def statefulctl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STATEFULCTL, *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_writes_the_skeleton_and_refuses_to_overwrite(tmp_path: Path) -> None:
    first = statefulctl("new-workload", "demo", "--dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "demo"
    assert {p.name for p in folder.iterdir()} == FILES
    assert "python -m demo --state-endpoint 127.0.0.1:7100" in first.stdout
    assert 'env_prefix="STATEFUL_DEMO_"' in (folder / "settings.py").read_text()

    (folder / "description.py").write_text("# edited\n")
    (folder / "notes.txt").write_text("mine\n")
    again = statefulctl("new-workload", "demo", "--dir", str(tmp_path))
    assert again.returncode != 0
    assert_one_line_error(again)
    assert "--force" in again.stderr
    assert (folder / "description.py").read_text() == "# edited\n"

    forced = statefulctl("new-workload", "demo", "--dir", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "WorkloadDescription" in (folder / "description.py").read_text()
    assert (folder / "notes.txt").read_text() == "mine\n"  # --force overwrites only generated files


@pytest.mark.parametrize("name", ["Demo", "-demo", "demo-", "de_mo", "a" * 64, "9lives", "class"])
def test_bad_name_is_a_usage_error(tmp_path: Path, name: str) -> None:
    result = statefulctl("new-workload", "--dir", str(tmp_path), "--", name)  # --: "-demo" is no option
    assert result.returncode == 2
    assert_one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_default_folder_is_an_importable_package(tmp_path: Path) -> None:
    result = statefulctl("new-workload", "my-db", "--topology", "peers", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "my_db_workload"
    assert {p.name for p in folder.iterdir()} == FILES
    assert "python -m my_db_workload" in (folder / "README.md").read_text()
    assert 'env_prefix="STATEFUL_MY_DB_"' in (folder / "settings.py").read_text()


@pytest.mark.parametrize("topology", ["master-replica", "peers"])
def test_generated_code_is_ruff_clean(tmp_path: Path, topology: str) -> None:
    assert statefulctl("new-workload", "demo", "--dir", str(tmp_path), "--topology", topology).returncode == 0
    for command in (["check"], ["format", "--check"]):
        lint = subprocess.run(
            [RUFF, *command, "--config", str(PYPROJECT), "--no-cache", str(tmp_path / "demo")],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


def sdk_violations(folder: Path) -> list[str]:
    """Every import in the generated package of a ``mesos_stateful`` module other than the public
    SDK (``from mesos_stateful import sdk`` / ``from mesos_stateful.sdk import ...``)."""
    bad = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "mesos_stateful":
                    modules = [f"mesos_stateful.{alias.name}" for alias in node.names]
                else:
                    modules = [node.module]
            else:
                continue  # relative: the package's own modules
            bad += [
                f"{path.name}:{node.lineno}: {module}"
                for module in modules
                if module.split(".")[0] == "mesos_stateful" and module != "mesos_stateful.sdk"
            ]
    return bad


@pytest.mark.parametrize("topology", ["master-replica", "peers"])
def test_generated_code_imports_only_the_sdk(tmp_path: Path, topology: str) -> None:
    assert statefulctl("new-workload", "demo", "--dir", str(tmp_path), "--topology", topology).returncode == 0
    folder = tmp_path / "demo"
    assert sdk_violations(folder) == []
    assert "from mesos_stateful import sdk" in (folder / "__main__.py").read_text()
    # The check itself sees a violation.
    (folder / "extra.py").write_text(
        "from mesos_stateful.common import errors\nimport mesos_stateful.workloads.base\n"
    )
    assert sdk_violations(folder) == [
        "extra.py:1: mesos_stateful.common",
        "extra.py:2: mesos_stateful.workloads.base",
    ]


def test_generated_code_type_checks_strict(tmp_path: Path) -> None:
    """Both topologies pass ``mypy --strict`` against the installed suite (which is typed,
    ``py.typed``), as the generated README tells the author to run it."""
    for name, topology in (("shop-mr", "master-replica"), ("shop-peers", "peers")):
        result = statefulctl("new-workload", name, "--dir", str(tmp_path), "--topology", topology)
        assert result.returncode == 0, result.stderr
    mypy = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy")]
    check = subprocess.run(
        [*mypy, "-p", "shop_mr", "-p", "shop_peers"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        cwd=tmp_path,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


# Runs in a subprocess with tmp_path on sys.path: serves the generated servicer in-process (no
# registration), calls Describe and Config over gRPC, runs the member's launch as a real process
# until its readiness check passes and fetches its index page. Prints a JSON summary.
SERVE_AND_LAUNCH = textwrap.dedent(
    """
    import asyncio, json, sys, urllib.request
    from pathlib import Path

    import grpc

    from mesos_stateful.api.stateful.v1 import types_pb2, workload_service_pb2 as pb
    from mesos_stateful.testing.workloads import (
        MemberRunner, context, instance, pending_member, serve_workload
    )

    root, role_name = Path(sys.argv[1]), sys.argv[2]
    sys.path.insert(0, str(root))
    from demo.servicer import DemoWorkload
    from demo.settings import DemoSettings

    async def main() -> dict:
        role = types_pb2.Role.Value(role_name)
        settings = DemoSettings(python=sys.executable)
        runner = MemberRunner(root / "sandboxes")
        try:
            async with serve_workload(DemoWorkload(settings)) as served:
                described = await served.stub.Describe(pb.DescribeRequest(), timeout=30)
                members = [pending_member("shop", 0, role)]
                inst = instance("shop", "demo", members, config={"greeting": "hi"})
                request = pb.ConfigRequest(context=context(inst, "shop-0"))
                config = await served.stub.Config(request, timeout=30)
                bad = instance("shop", "demo", members, config={"nope": "x"})
                try:
                    request = pb.ConfigRequest(context=context(bad, "shop-0"))
                    await served.stub.Config(request, timeout=30)
                    bad_code = "OK"
                except grpc.aio.AioRpcError as error:
                    bad_code = error.code().name
            launch = config.launch
            member = await runner.start(launch, timeout=60)
            url = f"http://127.0.0.1:{member.port(launch.port_names[0])}/index.html"
            page = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
            return {
                "name": described.description.name,
                "topology": types_pb2.Topology.Name(described.description.topology),
                "ports": list(described.description.port_names),
                "config_keys": [k.name for k in described.description.config_keys],
                "member_id": launch.member_id,
                "role": types_pb2.Role.Name(launch.role),
                "argv": list(launch.argv),
                "readiness_port": launch.readiness.tcp.port_name,
                "page": page,
                "bad_config": bad_code,
            }
        finally:
            await runner.close()

    print(json.dumps(asyncio.run(main())))
    """
)


@pytest.mark.parametrize(
    ("topology", "role", "expected"),
    [("master-replica", "ROLE_MASTER", "TOPOLOGY_MASTER_REPLICA"), ("peers", "ROLE_PEER", "TOPOLOGY_PEERS")],
)
def test_generated_service_answers_describe_and_config(
    tmp_path: Path, topology: str, role: str, expected: str
) -> None:
    assert statefulctl("new-workload", "demo", "--dir", str(tmp_path), "--topology", topology).returncode == 0
    run = subprocess.run(
        [sys.executable, "-c", SERVE_AND_LAUNCH, str(tmp_path), role],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["name"] == "demo"
    assert summary["topology"] == expected
    assert summary["ports"] == ["main"]
    assert summary["config_keys"] == ["greeting"]
    assert summary["member_id"] == "shop-0"
    assert summary["role"] == role
    assert summary["argv"][1:] == [
        "-m",
        "http.server",
        "${PORT_MAIN}",
        "--bind",
        "${HOST}",
        "--directory",
        "${MESOS_SANDBOX}",
    ]
    assert summary["readiness_port"] == "main"
    assert summary["page"] == "hi"
    assert summary["bad_config"] == "INVALID_ARGUMENT"
