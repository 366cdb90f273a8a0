"""Writing the launch's files into the sandbox (shared by every runtime: Docker mounts them)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from mesos_stateful.executor.launch import PreparedFile


def write_files(files: Iterable[PreparedFile]) -> None:
    """Write each file atomically (temp file + rename) with its mode. Raises OSError."""
    for file in files:
        file.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = file.path.with_name(f".{file.path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(file.content)
            # Set the mode explicitly: open() would apply the umask.
            os.chmod(temporary, file.mode)
            os.replace(temporary, file.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
