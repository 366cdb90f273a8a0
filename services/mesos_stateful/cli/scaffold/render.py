"""Renders the workload skeleton from the ``templates/*.tmpl`` files (``string.Template``; a
literal ``$`` is written ``$$``). Pure apart from ``write``: no typer, no console."""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from string import Template
from typing import Protocol

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 63


class Lang(StrEnum):
    python = "python"
    node = "node"


class Topology(StrEnum):
    master_replica = "master-replica"
    peers = "peers"


# Per topology: the WorkloadDescription enum, the roles Config accepts, the servicer template and
# what the README says about each callback.
_TOPOLOGY_ENUM = {Topology.master_replica: "TOPOLOGY_MASTER_REPLICA", Topology.peers: "TOPOLOGY_PEERS"}
_ROLES = {
    Topology.master_replica: "types_pb2.ROLE_MASTER, types_pb2.ROLE_SLAVE",
    Topology.peers: "types_pb2.ROLE_PEER",
}
_CALLBACKS = {
    Topology.master_replica: [
        ("Describe", "answered by `WorkloadBase` from `description()`."),
        ("Config", "the launch of one member (master or replica) before each launch; pure."),
        ("StartMaster", "make the member the master: on first start and when it is promoted."),
        ("StartSlave", "make the member a replica of `sdk.master(ctx)`; also re-points after a promotion."),
        ("MasterRunning / SlaveRunning", "the member is ready: return a status map (offset, lag)."),
        ("MasterLost", "choose the replica to promote (`promote_member_id`); empty: ask again later."),
        ("SlaveLost", "a replica is gone: `replace=True` launches a new one."),
        ("RemoveMember", "the member is stopped for good (scale down): make the others forget it."),
    ],
    Topology.peers: [
        ("Describe", "answered by `WorkloadBase` from `description()`."),
        ("Config", "the launch of one peer before each launch (give it the others' addresses); pure."),
        ("Start", "the peer's task is running: join it to the cluster (or check it rejoined)."),
        ("PeerRunning", "the peer is ready: return a status map."),
        ("PeerLost", "a peer is gone: remove it from the cluster if needed; `replace=True` launches one."),
        ("RemoveMember", "the member is stopped for good (scale down, or before its replacement joins)."),
    ],
}
# Generated file -> template.
_FILES = {
    "__init__.py": "__init__.py.tmpl",
    "__main__.py": "__main__.py.tmpl",
    "description.py": "description.py.tmpl",
    "settings.py": "settings.py.tmpl",
    "config.py": "config.py.tmpl",
    "README.md": "README.md.tmpl",
}


class ScaffoldError(Exception):
    """A bad name or an unusable target folder; ``usage`` is True for bad input (exit 2)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


def check_name(name: str) -> None:
    """A workload name is a DNS-1123 label; its package name must also be a Python identifier."""
    if not DNS_LABEL.fullmatch(name) or len(name) > MAX_NAME:
        raise ScaffoldError(
            f"invalid workload name {name!r}: a DNS-1123 label is 1-{MAX_NAME} lowercase letters, "
            "digits or '-', starting and ending with a letter or digit",
            usage=True,
        )
    if name[0].isdigit() or keyword.iskeyword(package_name(name)):
        raise ScaffoldError(
            f"invalid workload name {name!r}: it must start with a letter and not be a Python keyword "
            "(it names the Python package)",
            usage=True,
        )


def package_name(name: str) -> str:
    return name.replace("-", "_")


@dataclass(frozen=True)
class Skeleton:
    """What to generate: the workload ``name``, its topology and ``package``, the Python package
    (folder) name the code is run as (``python -m <package>``; the code imports itself relatively)."""

    name: str
    topology: Topology
    package: str

    def variables(self) -> dict[str, str]:
        callbacks = "".join(f"- **{cb}**: {what}\n" for cb, what in _CALLBACKS[self.topology])
        return {
            "name": self.name,
            "package": self.package,
            "class_name": "".join(part.capitalize() for part in self.name.split("-")),
            "env_prefix": f"STATEFUL_{package_name(self.name).upper()}_",
            "topology": self.topology.value,
            "topology_enum": _TOPOLOGY_ENUM[self.topology],
            "roles": _ROLES[self.topology],
            "callbacks": callbacks,
        }

    def files(self) -> dict[str, str]:
        """Generated file name -> content."""
        templates = dict(_FILES)
        templates["servicer.py"] = f"servicer_{self.topology.name}.py.tmpl"
        variables = self.variables()
        return {target: _template(source).substitute(variables) for target, source in templates.items()}


def _template(source: str) -> Template:
    text = resources.files(__package__).joinpath("templates", source).read_text(encoding="utf-8")
    return Template(text)


def target(name: str, parent: Path | None) -> Path:
    """The package folder: ``<parent>/<package>`` with ``--dir``, else ``./<package>_workload``
    (a '-' becomes '_': the folder is imported by its name)."""
    if parent is None:
        return Path(f"{package_name(name)}_workload")
    return parent / package_name(name)


class _Files(Protocol):
    def files(self) -> Mapping[str, str | bytes]: ...


def write(skeleton: _Files, folder: Path, force: bool = False) -> list[Path]:
    """Write the skeleton (a :class:`Skeleton`, or a ``node.NodeSkeleton`` whose files may be in
    sub-folders and binary) into ``folder``. An existing folder is refused unless ``force``; then
    the generated files are overwritten and any other file is kept."""
    if folder.exists() or folder.is_symlink():
        if not force:
            raise ScaffoldError(f"{folder} already exists (use --force to overwrite it)")
        if not folder.is_dir():
            raise ScaffoldError(f"{folder} exists and is not a folder; not touching it")
    contents = skeleton.files()  # render first: nothing is written if a template is broken
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for file_name, content in sorted(contents.items()):
            path = folder / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
            written.append(path)
    except OSError as error:
        raise ScaffoldError(f"cannot write {folder}: {error.strerror or error}") from None
    return written
