"""What a member's bootstrap and checks need beyond my.cnf: ``mysql-member.json`` in its sandbox.

Config writes it (mode 0600, not expanded: it holds the instance's passwords, which must not be
touched by ``${VAR}`` expansion nor appear on argv or in the environment); the bootstrap and the
readiness/health checks read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "mysql-member.json"
DEFAULTS_FILE = "my.cnf"
# The server's datadir inside the member's persistent volume: InnoDB, the binary logs, the relay
# logs, master.info / relay-log.info and mysql.gtid_slave_pos all live there and outlive the task.
# A subdirectory, so that a new one can be initialised next to it and renamed into place.
DATADIR = "datadir"
# Written by the bootstrap of a replica: the master's GTID position when the replica started.
CATCHUP_FILE = "catchup.gtid"


@dataclass(frozen=True)
class MemberFile:
    member_id: str
    replica: bool
    mariadbd: str
    install_db: str
    admin_user: str
    operator_user: str
    admin_password: str
    replication_user: str
    replication_password: str
    # The master a replica follows ("" / 0 for a master).
    master_host: str = ""
    master_port: int = 0
    catchup_probe_seconds: float = 10.0
    connect_timeout_seconds: float = 3.0
    # The member's persistent volume, relative to the sandbox (Config always sets it). The default
    # is sdk.DATA_DIR, spelled out: it is loaded with grpc, and the bootstrap and checks stay light.
    volume: str = "data"

    @property
    def standby(self) -> bool:
        """A replica with no master to follow yet (every member restarted on its volume)."""
        return self.replica and not self.master_host

    def datadir(self, sandbox: Path) -> Path:
        return sandbox / self.volume / DATADIR

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> MemberFile:
        return cls(**json.loads(text))

    @classmethod
    def read(cls, sandbox: Path) -> MemberFile:
        return cls.from_json((sandbox / FILE_NAME).read_text())
