"""``python -m mesos_stateful.localcluster [serve]`` runs the cluster;
``... fault kill-agent|stop-agent|start-agent <agent> --master URL`` injects faults."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request

import typer

from mesos_stateful.common.logs import setup_logging
from mesos_stateful.localcluster.cluster import LocalCluster
from mesos_stateful.localcluster.settings import LocalClusterSettings

app = typer.Typer(help="A local Mesos-compatible cluster (master + simulated agents).", no_args_is_help=False)
fault_app = typer.Typer(help="Inject faults into a running local cluster.")
app.add_typer(fault_app, name="fault")

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
