"""``python -m mesos_stateful.localcluster [serve]`` runs the cluster;
``... fault kill-agent|stop-agent|start-agent <agent> --master URL`` injects faults;
``... maintenance schedule|unschedule|start|stop|status`` drives maintenance through the operator API
(``POST /api/v1``), as an operator of a real cluster would."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import typer

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.localcluster.cluster import LocalCluster
from mesos_stateful.localcluster.settings import AgentSettings, LocalClusterSettings

app = typer.Typer(help="A local Mesos-compatible cluster (master + simulated agents).", no_args_is_help=False)
fault_app = typer.Typer(help="Inject faults into a running local cluster.")
app.add_typer(fault_app, name="fault")
maintenance_app = typer.Typer(
    help="Maintenance of agents' machines through the operator API (POST /api/v1, as on a real master)."
)
app.add_typer(maintenance_app, name="maintenance")

MASTER = typer.Option("http://127.0.0.1:5050", "--master", help="URL of the local cluster's master")


async def _serve(settings: LocalClusterSettings) -> None:
    cluster = LocalCluster(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await cluster.start()
    try:
        await stop.wait()
    finally:
        await cluster.stop()


def serve_cluster(argv: list[str]) -> None:
    settings = LocalClusterSettings.load(argv)
    setup_logging("localcluster", settings.log_level)
    asyncio.run(_serve(settings))


@app.callback(invoke_without_command=True)
def main_callback(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        serve_cluster([])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(ctx: typer.Context) -> None:
    """Run the cluster (flags: see LocalClusterSettings, e.g. --agents 3 --listen 127.0.0.1:5050)."""
    serve_cluster(list(ctx.args))


@app.command("master", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def master_command(ctx: typer.Context) -> None:
    """Run the master for agents in processes of their own (the `agent` command): `serve` with no
    in-process agents unless --agents is given (flags: LocalClusterSettings, e.g. --listen
    0.0.0.0:5050 --agent-ping-timeout 5)."""
    argv = list(ctx.args)
    if not any(a == "--agents" or a.startswith("--agents=") for a in argv) and not os.environ.get(
        "STATEFUL_CLUSTER_AGENTS"
    ):
        argv = ["--agents", "0", *argv]
    serve_cluster(argv)


@app.command("agent", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def agent_command(ctx: typer.Context) -> None:
    """Run ONE agent in this process, registered with a master over HTTP (flags: AgentSettings:
    --master HOST:PORT --ip ADDRESS|auto --port 5051 --work-dir DIR --cpus N --mem MB --disk MB
    --ports BEGIN-END [--attributes 'k:v;k:v'] [--hostname NAME]). SIGTERM leaves its executors
    running (a restart on the same work dir recovers them)."""
    from mesos_stateful.localcluster.agent_process import run_agent

    settings = AgentSettings.load(list(ctx.args))
    setup_logging("localcluster-agent", settings.log_level)
    raise typer.Exit(asyncio.run(run_agent(settings)))


def _fault(master: str, agent: str, action: str) -> None:
    url = f"{master.rstrip('/')}/faults/agents/{agent}/{action}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=60) as resp:
            typer.echo(json.dumps(json.loads(resp.read())))
    except urllib.error.HTTPError as error:
        typer.echo(error.read().decode(), err=True)
        raise typer.Exit(1) from None


@fault_app.command("kill-agent")
def kill_agent(agent: str, master: str = MASTER) -> None:
    """Kill an agent (id, hostname or index) and its executors: the master disconnects it at once and
    reports its tasks TASK_LOST / TASK_UNREACHABLE after the ping timeouts."""
    _fault(master, agent, "kill")


@fault_app.command("stop-agent")
def stop_agent(agent: str, master: str = MASTER) -> None:
    """Cut the link between the master and an agent: its tasks keep running and reachable; the
    master notices after agent_ping_timeout x max_agent_ping_timeouts (TASK_UNREACHABLE / TASK_LOST)."""
    _fault(master, agent, "stop")


@fault_app.command("start-agent")
def start_agent(agent: str, master: str = MASTER) -> None:
    """Heal a stopped agent's link (it re-registers if the master had marked it unreachable), or
    restart a killed one: it recovers its id, reservations and volumes from its work dir (its
    executors died with it)."""
    _fault(master, agent, "start")


# --- maintenance (operator API) ----------------------------------------------------------------------


def _operator(master: str, call: dict[str, Any]) -> dict[str, Any]:
    """One operator API call in JSON; its ``Response`` ({} for the updates, which answer no body).
    A refused call prints the master's answer and exits 1."""
    request = urllib.request.Request(
        f"{master.rstrip('/')}/api/v1",
        data=json.dumps(call).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            body = resp.read()
    except urllib.error.HTTPError as error:
        typer.echo(f"{error.code}: {error.read().decode()}", err=True)
        raise typer.Exit(1) from None
    except urllib.error.URLError as error:
        typer.echo(f"master {master} unreachable: {error.reason}", err=True)
        raise typer.Exit(1) from None
    answer: dict[str, Any] = json.loads(body) if body else {}
    return answer


def _machines(master: str) -> list[dict[str, str]]:
    """Every machine the master knows: its registered agents' (``hostname`` and the IP of the
    agent's pid ``slave(1)@<ip>:<port>``) and those in the schedule or DOWN, sorted by address."""
    known: dict[tuple[str, str], dict[str, str]] = {}
    agents = _operator(master, {"type": "GET_AGENTS"})["get_agents"].get("agents", [])
    for agent in agents:
        ip = str(agent.get("pid", "")).split("@", 1)[-1].rsplit(":", 1)[0]
        machine = {
            "hostname": agent["agent_info"]["hostname"],
            "ip": ip,
            "agent_id": agent["agent_info"]["id"]["value"],
        }
        known[(machine["hostname"], ip)] = machine
    schedule = _operator(master, {"type": "GET_MAINTENANCE_SCHEDULE"})["get_maintenance_schedule"]["schedule"]
    status = _operator(master, {"type": "GET_MAINTENANCE_STATUS"})["get_maintenance_status"]["status"]
    ids = [m for w in schedule.get("windows", []) for m in w.get("machine_ids", [])]
    ids += status.get("down_machines", []) + [m["id"] for m in status.get("draining_machines", [])]
    for machine_id in ids:
        key = (machine_id.get("hostname", ""), machine_id.get("ip", ""))
        known.setdefault(key, {"hostname": key[0], "ip": key[1]})

    def address(m: dict[str, str]) -> tuple[int, ...]:
        try:
            return tuple(int(p) for p in m["ip"].split("."))
        except ValueError:
            return (256,)

    return sorted(known.values(), key=address)


def _machine(master: str, agent: str) -> dict[str, str]:
    """``MachineID`` of an agent given by id, hostname, IP, or index (in the address order of the
    machines the master knows, as the fault commands number a local cluster's agents); an IPv4
    address the master does not know is taken as a local cluster machine (hostname = address)."""
    machines = _machines(master)
    for m in machines:
        if agent in (m.get("agent_id"), m["hostname"], m["ip"]):
            return {"hostname": m["hostname"], "ip": m["ip"]}
    if agent.isdigit() and int(agent) < len(machines):
        m = machines[int(agent)]
        return {"hostname": m["hostname"], "ip": m["ip"]}
    try:  # a machine the master does not know now (e.g. UP again, its agent not back yet)
        ipaddress.IPv4Address(agent)
        return {"hostname": agent, "ip": agent}  # a local cluster's agent is named by its address
    except ValueError:
        pass
    typer.echo(f"no agent or machine {agent!r}; known: {[m['hostname'] for m in machines]}", err=True)
    raise typer.Exit(1)


def _schedule(master: str) -> dict[str, Any]:
    schedule: dict[str, Any] = _operator(master, {"type": "GET_MAINTENANCE_SCHEDULE"})[
        "get_maintenance_schedule"
    ]["schedule"]
    return schedule


def _without(schedule: dict[str, Any], machines: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The schedule's windows without these machines (a machine may be in one window only)."""
    keys = {(m["hostname"], m["ip"]) for m in machines}
    windows = []
    for window in schedule.get("windows", []):
        rest = [m for m in window.get("machine_ids", []) if (m.get("hostname"), m.get("ip")) not in keys]
        if rest:
            windows.append({**window, "machine_ids": rest})
    return windows


def _update_schedule(master: str, windows: list[dict[str, Any]]) -> None:
    _operator(
        master,
        {
            "type": "UPDATE_MAINTENANCE_SCHEDULE",
            "update_maintenance_schedule": {"schedule": {"windows": windows}},
        },
    )
    typer.echo(json.dumps(_schedule(master)))


AGENTS = typer.Argument(..., help="agents: id, hostname, IP or index")
SOME_AGENTS = typer.Argument(None, help="agents to report on (default: the whole cluster)")


@maintenance_app.command("schedule")
def maintenance_schedule(
    agents: list[str] = AGENTS,
    start_in: float = typer.Option(0.0, "--start-in", help="seconds from now until the machines go down"),
    duration: float = typer.Option(3600.0, "--duration", help="seconds the machines stay down"),
    master: str = MASTER,
) -> None:
    """Schedule the agents' machines for maintenance (one window): they go DRAINING, their
    frameworks get inverse offers, their offers carry the unavailability."""
    machines = [_machine(master, a) for a in agents]
    if start_in < 0 or duration <= 0:
        # Mesos accepts such windows (maintenance.cpp checks only a negative duration); they give
        # frameworks no notice, so say it.
        why = "starts in the past" if start_in < 0 else "has no duration"
        typer.echo(
            f"warning: this window {why}: frameworks get no time to move their tasks before "
            "`maintenance start` may take the machines DOWN",
            err=True,
        )
    start_ns = int((time.time() + start_in) * 1e9)
    window = {
        "machine_ids": machines,
        "unavailability": {
            "start": {"nanoseconds": start_ns},
            "duration": {"nanoseconds": int(duration * 1e9)},
        },
    }
    _update_schedule(master, [*_without(_schedule(master), machines), window])


@maintenance_app.command("unschedule")
def maintenance_unschedule(agents: list[str] = AGENTS, master: str = MASTER) -> None:
    """Take the agents' machines out of the schedule (back UP; inverse offers rescinded)."""
    machines = [_machine(master, a) for a in agents]
    _update_schedule(master, _without(_schedule(master), machines))


# Mesos' terminal task states (mesos.proto TaskState): a task in another state still runs or may.
TERMINAL_TASK_STATES = frozenset(
    {
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_ERROR",
        "TASK_LOST",
        "TASK_DROPPED",
        "TASK_GONE",
        "TASK_GONE_BY_OPERATOR",
    }
)


def _tasks_on(master: str, machines: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The non-terminal tasks (GET_TASKS) on the agents of these machines."""
    keys = {(m["hostname"], m["ip"]) for m in machines}
    agent_ids = {
        m["agent_id"] for m in _machines(master) if "agent_id" in m and (m["hostname"], m["ip"]) in keys
    }
    tasks = _operator(master, {"type": "GET_TASKS"})["get_tasks"]
    running = tasks.get("tasks", []) + tasks.get("unreachable_tasks", [])
    return [
        t
        for t in running
        if t.get("agent_id", {}).get("value") in agent_ids and t.get("state") not in TERMINAL_TASK_STATES
    ]


@maintenance_app.command("start")
def maintenance_start(
    agents: list[str] = AGENTS,
    master: str = MASTER,
    force: bool = typer.Option(False, "--force", help="take the machines DOWN even with tasks still on them"),
) -> None:
    """START_MAINTENANCE: the (scheduled) machines go DOWN; their agents are removed, their tasks lost.
    Refused (exit 1) while tasks still run on them — their frameworks have not moved them yet (see
    ``maintenance status``: an inverse offer ACCEPTed means a framework is done) — unless ``--force``."""
    machines = [_machine(master, a) for a in agents]
    left = _tasks_on(master, machines)
    if left and not force:
        names = ", ".join(str(t.get("task_id", {}).get("value")) for t in left[:5])
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        typer.echo(
            f"refusing to take {', '.join(m['hostname'] for m in machines)} DOWN: {len(left)} task(s) still "
            f"run there ({names}{more}); their frameworks are still moving them (`maintenance status`). "
            "Wait, or pass --force to lose them.",
            err=True,
        )
        raise typer.Exit(1)
    _operator(master, {"type": "START_MAINTENANCE", "start_maintenance": {"machines": machines}})
    typer.echo(json.dumps({"down": machines}))


@maintenance_app.command("stop")
def maintenance_stop(agents: list[str] = AGENTS, master: str = MASTER) -> None:
    """STOP_MAINTENANCE: DOWN machines go UP and leave the schedule; their agents may register again
    (``fault start-agent``)."""
    machines = [_machine(master, a) for a in agents]
    _operator(master, {"type": "STOP_MAINTENANCE", "stop_maintenance": {"machines": machines}})
    typer.echo(json.dumps({"up": machines}))


@maintenance_app.command("status")
def maintenance_status(
    agents: list[str] = SOME_AGENTS,
    master: str = MASTER,
) -> None:
    """The schedule and the ClusterStatus (DRAINING machines with the frameworks' answers, DOWN ones);
    with agents: each one's machine, mode (UP / DRAINING / DOWN) and unavailability."""
    status = _operator(master, {"type": "GET_MAINTENANCE_STATUS"})["get_maintenance_status"]["status"]
    schedule = _schedule(master)
    if not agents:
        typer.echo(json.dumps({"schedule": schedule, "status": status}))
        return
    down = {(m.get("hostname"), m.get("ip")) for m in status.get("down_machines", [])}
    draining = {(m["id"].get("hostname"), m["id"].get("ip")) for m in status.get("draining_machines", [])}
    windows = {
        (m.get("hostname"), m.get("ip")): w.get("unavailability")
        for w in schedule.get("windows", [])
        for m in w.get("machine_ids", [])
    }
    for agent in agents:
        machine = _machine(master, agent)
        key = (machine["hostname"], machine["ip"])
        mode = "DOWN" if key in down else "DRAINING" if key in draining else "UP"
        typer.echo(json.dumps({"machine": machine, "mode": mode, "unavailability": windows.get(key)}))
