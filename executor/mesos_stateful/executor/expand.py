"""``${VAR}`` expansion for argv, env values, check commands and files.

Rules (documented in docs, see executor/README.md):

* only the braced form ``${NAME}`` is expanded, so shell scripts written as files keep their own
  ``$1`` / ``$HOME`` / ``$$`` untouched;
* ``$${NAME}`` is an escape and yields the literal text ``${NAME}``;
* a reference to a variable that is not in the environment is left as it is (like Kubernetes'
  ``$(VAR)``), and reported back to the caller so that it can log a warning: failing the launch
  would break files that legitimately contain ``${...}`` for another tool.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Expander:
    """Expands references from one environment and remembers the names it could not resolve."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.unknown: set[str] = set()

    def __call__(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            escaped, name = match.group(1), match.group(2)
            if escaped:
                return "${" + name + "}"
            value = self._env.get(name)
            if value is None:
                self.unknown.add(name)
                return match.group(0)
            return value

        return _REFERENCE.sub(replace, text)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``text`` once; unknown references stay as they are."""
    return Expander(env)(text)
