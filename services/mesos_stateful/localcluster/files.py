"""An agent's ``/files/read`` and ``/files/browse`` endpoints, as Mesos serves them (src/files/files.cpp).

The agent *attaches* directories under virtual paths (slave.cpp ``Executor::Executor``: the run's
real sandbox path and ``/frameworks/<fid>/executors/<eid>/runs/latest``); a request's path is
resolved by the longest attached prefix, the rest joined below it, canonicalised and refused when
it leaves the attached directory (``FilesProcess::resolve``). Answers as Mesos 1.11:

* ``/files/read?path=P[&offset=N][&length=N]``: 200 ``{"data": <bytes from offset>, "offset":
  N}``; without ``offset`` (or ``offset=-1``): ``{"data": "", "offset": <file size>}``; at most 16
  pages (64 KiB) per answer; an offset past the end gives ``""``. 400 ``Expecting 'path=value' in
  query.`` (path missing or empty), ``Failed to parse offset: ...`` / ``Negative offset provided:
  -N.`` (below -1), the same for ``length`` (``-1``: to the end), ``Cannot read a directory.``, a
  path escaping its attached directory (``'P' is inaccessible``); 404 with an empty body for a
  path that is not attached or does not exist.
* ``/files/browse?path=P``: 200, a JSON array of ``{path, nlink, size, mtime (s), mode ("drwxr-xr-x"),
  uid, gid}`` sorted by path; 400 / 404 as above.

``data`` carries the file's bytes as a JSON string; bytes that are not UTF-8 are sent as the
escapes ``\\udc80``-``\\udcff`` (Python's ``surrogateescape``), so a client gets every byte back with
``data.encode("utf-8", "surrogateescape")`` and advances ``offset`` by that length.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import stat
from pathlib import Path

from aiohttp import web

# FilesProcess::_read: "Cap the read length at 16 pages."
_INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_READ_BYTES = (os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096) * 16


class FilesError(Exception):
    """A request the files endpoints refuse: ``status`` 400 (invalid) or 404 (not found)."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _clean(path: str) -> str:
    """Without trailing '/' (as ``attach`` and ``resolve`` strip them); "/" stays "/"."""
    stripped = path.rstrip("/")
    return stripped or "/"


class Files:
    """The attached virtual paths of one agent and the requests on them."""

    def __init__(self) -> None:
        self._paths: dict[str, str] = {}

    def attach(self, real: Path | str, virtual: str) -> None:
        """Serve the directory (or file) ``real`` under ``virtual`` (a later attach wins)."""
        self._paths[_clean(virtual)] = str(real)

    def detach(self, virtual: str) -> None:
        self._paths.pop(_clean(virtual), None)

    def resolve(self, path: str) -> str:
        """The real path of a virtual one; :class:`FilesError` 404 when not attached or missing,
        400 when it leaves its attached directory."""
        tokens = _clean(path).split("/")
        suffix: list[str] = []
        while tokens:
            prefix = "/".join(tokens) or "/"
            real = self._paths.get(prefix)
            if real is None:
                suffix.insert(0, tokens.pop())
                continue
            if os.path.isdir(real):
                joined = os.path.join(real, *suffix) if suffix else real
                if not os.path.exists(joined):
                    raise FilesError(404)
                canonical = os.path.realpath(joined)
                if not canonical.startswith(os.path.realpath(real)):
                    raise FilesError(400, f"'{joined}' is inaccessible.\n")
                return canonical
            if suffix:
                raise FilesError(404)  # an attached file used as a directory: Not Found
            if not os.path.exists(real):
                raise FilesError(404)
            return real
        raise FilesError(404)

    def read(self, path: str, offset: int, length: int | None) -> tuple[int, bytes]:
        """(size of the file, bytes from ``offset``): ``FilesProcess::_read``."""
        real = self.resolve(path)
        if os.path.isdir(real):
            raise FilesError(400, "Cannot read a directory.\n")
        try:
            with open(real, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if offset >= size:
                    return size, b""
                if length is None:
                    length = size - offset
                if length == 0:
                    return size, b""
                f.seek(offset)
                return size, f.read(min(length, MAX_READ_BYTES))
        except OSError as error:
            raise FilesError(500, f"Failed to open file at '{real}': {error.strerror}.\n") from None

    def browse(self, path: str) -> list[dict[str, object]]:
        real = self.resolve(path)
        entries: list[tuple[str, dict[str, object]]] = []
        try:
            names = os.listdir(real) if os.path.isdir(real) else []
        except OSError:
            names = []
        for name in names:
            full = os.path.join(real, name)
            try:
                s = os.stat(full)
            except OSError:
                continue  # "Found ... in ls but stat failed"
            entries.append((full, _file_info(_join(path, name), s)))
        return [info for _, info in sorted(entries, key=lambda e: e[0])]


def _join(virtual: str, name: str) -> str:
    return virtual.rstrip("/") + "/" + name


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _file_info(path: str, s: os.stat_result) -> dict[str, object]:
    """``model(FileInfo)`` of src/common/http.cpp."""
    return {
        "path": path,
        "nlink": s.st_nlink,
        "size": s.st_size,
        "mtime": int(s.st_mtime),
        "mode": stat.filemode(s.st_mode),
        "uid": _owner(s.st_uid),
        "gid": _group(s.st_gid),
    }


def _number(query: dict[str, str], name: str) -> int | None:
    """An integer query parameter >= -1 (None when absent); FilesError 400 as Mesos words it."""
    if name not in query:
        return None
    text = query[name]
    if not _INTEGER.fullmatch(text):
        raise FilesError(400, f"Failed to parse {name}: Failed to convert '{text}' to number.\n")
    value = int(text)
    if value < -1:
        raise FilesError(400, f"Negative {name} provided: {value}.\n")
    return value


def _path(query: dict[str, str]) -> str:
    path = query.get("path", "")
    if not path:
        raise FilesError(400, "Expecting 'path=value' in query.\n")
    return path


def _json(body: object) -> web.Response:
    return web.Response(status=200, text=json.dumps(body), content_type="application/json")


def _refused(error: FilesError) -> web.Response:
    return web.Response(status=error.status, text=error.message, content_type="text/plain")


def routes(files: Files) -> list[web.RouteDef]:
    """The aiohttp routes ``GET /files/read`` and ``GET /files/browse`` over ``files``."""

    async def read(request: web.Request) -> web.Response:
        query = dict(request.query)
        try:
            path = _path(query)
            offset = _number(query, "offset")
            length = _number(query, "length")
            if offset is None or offset == -1:
                size, data = files.read(path, 0, 0)
                return _json({"data": "", "offset": size})
            size, data = files.read(path, offset, None if length in (None, -1) else length)
        except FilesError as error:
            return _refused(error)
        return _json({"data": data.decode("utf-8", "surrogateescape"), "offset": offset})

    async def browse(request: web.Request) -> web.Response:
        try:
            listing = files.browse(_path(dict(request.query)))
        except FilesError as error:
            return _refused(error)
        return _json(listing)

    return [web.get("/files/read", read), web.get("/files/browse", browse)]
