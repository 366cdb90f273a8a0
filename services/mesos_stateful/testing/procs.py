"""Tests find member processes only among their own: a process belongs to a test when its
working directory, its stdout/stderr, a path on its command line or a mount (a container with the
sandbox mounted) is under one of the test's folders. Another suite on the machine runs the same
programs (``redis-server``, ``mariadbd``, ``etcd``) with the same titles; a lookup by program name
alone finds them too (issue 14: a test found 3 ``mariadbd`` processes and failed).

Linux only (reads /proc); processes of other users that cannot be read are not anyone's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root + "/") for root in roots)


def _resolved(roots: Iterable[str | Path]) -> list[str]:
    out: list[str] = []
    for root in roots:
        out += {str(Path(root)), str(Path(root).resolve())}
    return out


def belongs_to(pid: int, roots: Iterable[str | Path]) -> bool:
    """Whether live process ``pid`` runs in, writes to, names or mounts a path under ``roots``
    (False for a zombie, a process that is gone or one that cannot be read)."""
    folders = _resolved(roots)
    entry = Path(f"/proc/{pid}")
    try:
        if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return False
        cmdline = (entry / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    places = [arg.decode(errors="replace") for arg in cmdline if arg.startswith(b"/")]
    for link in ("cwd", "fd/1", "fd/2"):
        with contextlib.suppress(OSError):
            places.append(os.readlink(entry / link))
    if any(_under(place, folders) for place in places):
        return True
    with contextlib.suppress(OSError):
        # A container's process (a mount namespace of its own, so the host's mounts do not count):
        # the sandbox or a volume is bind-mounted from under the root.
        if os.readlink(entry / "ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            return False
        for line in (entry / "mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4 and _under(fields[3], folders):
                return True
    return False


def own_processes(roots: Iterable[str | Path], name: str | None = None) -> dict[int, str]:
    """pid -> process title (the command line, spaces for NULs) of live processes that
    :func:`belongs_to` ``roots``; only those whose program (``comm``) is ``name`` when given.
    The calling process is left out."""
    folders = _resolved(roots)
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if name is not None and (entry / "comm").read_text().strip() != name[:15]:
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if belongs_to(int(entry.name), folders):
            found[int(entry.name)] = title
    return found
