"""``LocalCluster``: the master's HTTP server and N simulated agents in one asyncio process."""

from __future__ import annotations

import asyncio
import atexit
import ipaddress
import logging
from pathlib import Path

from aiohttp import web

from mesos_stateful.localcluster import remote
from mesos_stateful.localcluster.agent import Agent
from mesos_stateful.localcluster.http_master import build_app
from mesos_stateful.localcluster.master import Master
from mesos_stateful.localcluster.resources import Key, Resources
from mesos_stateful.localcluster.settings import LocalClusterSettings

log = logging.getLogger(__name__)


class LocalCluster:
    def __init__(self, settings: LocalClusterSettings | None = None) -> None:
        self.settings = settings or LocalClusterSettings.load([])
        self.master = Master(self.settings)
        self.agents: list[Agent] = []
        self._runner: web.AppRunner | None = None
        self._started = False

    @property
    def master_address(self) -> str:
        """``host:port`` (what pymesos' ``master_uri`` and ``MESOS_MASTER`` take)."""
        return f"{self.master.hostname}:{self.master.port}"

    @property
    def master_url(self) -> str:
        return f"http://{self.master_address}"

    def _agent(self, i: int) -> Agent:
        s = self.settings
        ip = str(ipaddress.IPv4Address(s.agent_ip_base) + i)
        begin = s.agent_ports_begin + i * s.agent_ports_step
        total = Resources(
            scalars={Key("cpus"): s.agent_cpus, Key("mem"): s.agent_mem, Key("disk"): s.agent_disk},
            ranges={Key("ports"): frozenset(range(begin, begin + s.agent_ports_count))},
        )
        attributes = {k: v.replace("{i}", str(i)) for k, v in s.agent_attributes.items()}
        agent = Agent(self.master, i, ip, s.agent_port, total, attributes, Path(s.work_dir).absolute())
        # An agent whose work dir holds a checkpoint comes back with its id, reservations and volumes.
        agent.recover()
        return agent

    async def start(self) -> None:
        host, port = self.settings.listen.rsplit(":", 1)
        _make_dir(Path(self.settings.work_dir))
        self._runner = web.AppRunner(build_app(self), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, int(port), reuse_address=True)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.master.port = server.sockets[0].getsockname()[1]
        self.master.start()
        # Agent processes this master had admitted before a restart (split mode) wait to re-register.
        remote.recover_registry(self.master)
        atexit.register(self._kill_all_now)
        self._started = True
        for i in range(self.settings.agents):
            agent = self._agent(i)
            await agent.serve()
            self.agents.append(agent)
            self._register(agent)
        log.info("local cluster: master at %s, %d agents", self.master_url, len(self.agents))

    def _register(self, agent: Agent) -> None:
        """A fresh agent registers at once; one that recovered executors (or updates) from its
        checkpoint re-registers when its recovery is over (``Agent.finish_recovery``: at most
        ``executor_reregistration_timeout`` later). Either way it destroys orphan executors."""
        if agent.recovering:
            self.master.recovering_agent(agent)
            agent.start_recovery(
                self.settings.executor_reregistration_timeout, lambda: self.master.register_agent(agent)
            )
        else:
            self.master.register_agent(agent)
            agent.start_recovery(0.0, lambda: None)

    async def stop(self) -> None:
        """Stop everything; every executor session is killed (no process is left behind)."""
        if not self._started:
            return
        self._started = False
        await self.master.stop()
        for agent in self.agents:
            agent.alive = False
            await agent.destroy()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._kill_all_now()
        atexit.unregister(self._kill_all_now)

    def _kill_all_now(self) -> None:
        for agent in self.agents:
            agent.kill_all_now()

    def live_sessions(self) -> list[int]:
        return [sid for agent in self.agents for sid in agent.live_sessions()]

    def find_agent(self, key: str) -> Agent:
        for agent in self.agents:
            if key in (agent.id, agent.hostname, str(agent.index)):
                return agent
        remote_agent = self.master.find_agent(key)
        if remote_agent is not None:
            raise KeyError(
                f"agent {key} runs in a process of its own: kill (-9), stop (-STOP / -CONT) or restart "
                "that process (or its container) instead"
            )
        raise KeyError(f"unknown agent {key}")

    async def kill_agent(self, key: str) -> Agent:
        """The agent process dies, with its executors and tasks. Its connection to the master
        closes (unless a partition hides that too): the master disconnects it at once (offers
        rescinded; tasks of non-checkpointing frameworks lost) and marks it unreachable after the
        ping timeouts (TASK_UNREACHABLE / TASK_LOST), as Mesos does."""
        agent = self.find_agent(key)
        if not agent.alive:
            raise ValueError(f"agent {key} is already killed")
        agent.alive = False
        if agent.silent_since is None:
            agent.silent_since = asyncio.get_running_loop().time()
        agent.to_agent.clear()
        agent.to_master.clear()
        await agent.destroy()
        if not agent.partitioned:
            self.master.agent_exited(agent)
        return agent

    async def stop_agent(self, key: str) -> Agent:
        """A partition between the master and the agent only: the agent, its executors and their
        processes keep running and reachable; messages between master and agent wait on the link.
        The master notices after the ping timeouts (agent_ping_timeout x max_agent_ping_timeouts)."""
        agent = self.find_agent(key)
        if not agent.alive or agent.partitioned:
            raise ValueError(f"agent {key} is not running or already cut off")
        if agent.state != "ACTIVE":
            raise ValueError(f"agent {key} is not active ({agent.state})")
        agent.cut()
        log.info("agent %s (%s) cut off from the master", agent.id, agent.hostname)
        return agent

    async def start_agent(self, key: str) -> Agent:
        """A cut-off agent's link heals (re-registering if the master had marked it unreachable);
        a killed one restarts from its work dir: same id, reservations and volumes, no executors
        (they died with it)."""
        agent = self.find_agent(key)
        if not agent.alive:
            fresh = self._agent(agent.index)
            fresh.port = agent.port
            self.agents[self.agents.index(agent)] = fresh
            await fresh.serve()
            self._register(fresh)
            return fresh
        if not agent.partitioned:
            raise ValueError(f"agent {key} is already running")
        self.master.agent_healed(agent)
        return agent

    async def fault(self, key: str, action: str) -> Agent:
        if action == "kill":
            return await self.kill_agent(key)
        if action == "stop":
            return await self.stop_agent(key)
        if action == "start":
            return await self.start_agent(key)
        raise ValueError(f"unknown fault {action} (kill, stop or start)")


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
