"""What a peer's bootstrap needs: ``etcd-member.json`` in its sandbox, written by Config (expanded
at launch: its URLs use ``${HOST}`` and ``${PORT_*}``, only known once the offer is taken)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILE_NAME = "etcd-member.json"


@dataclass(frozen=True)
class MemberFile:
    # etcd member name, unique per launch: "<member id>.<incarnation>".
    name: str
    etcd: str
    data_dir: str
    peer_url: str
    client_url: str
    cluster_token: str
    # Client URLs of the peers running when Config was called; empty: start a new cluster.
    endpoints: list[str] = field(default_factory=list)
    # Extra etcd flags (the instance's settings), name -> value.
    flags: dict[str, str] = field(default_factory=dict)
    join_timeout_seconds: float = 60.0
    request_timeout_seconds: float = 5.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> MemberFile:
        return cls(**json.loads(text))

    @classmethod
    def read(cls, path: Path) -> MemberFile:
        return cls.from_json(path.read_text())
