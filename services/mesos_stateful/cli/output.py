"""The CLI's machine-readable outputs (``-o json`` / ``-o yaml``) and the width of its tables.

Both formats carry the same data: the protobuf JSON mapping of the answer (``MessageToDict``,
camelCase field names). A stream (``watch``, ``get --watch -o ...``) writes one compact JSON object
per line, or one YAML document per change (``---`` ... ``...``), flushed as it comes.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console

JSON = "json"
YAML = "yaml"
STRUCTURED = (JSON, YAML)

# Width given to tables written to a pipe or a file (no terminal to fit): wide enough that no
# column is cut or wrapped; tables are as wide as their content (they do not expand).
PIPE_WIDTH = 100_000


def structured(output: str) -> bool:
    return output in STRUCTURED


def _data(message: Message | dict[str, Any]) -> dict[str, Any]:
    return message if isinstance(message, dict) else MessageToDict(message)


def text(output: str, message: Message | dict[str, Any]) -> str:
    """The answer in ``output`` (json: indented; yaml: block style, keys in field order)."""
    data = _data(message)
    if output == YAML:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    return json.dumps(data, indent=2)


def emit(output: str, message: Message | dict[str, Any]) -> None:
    """Write one answer to stdout."""
    print(text(output, message), flush=True)


def emit_item(output: str, message: Message | dict[str, Any]) -> None:
    """Write one item of a stream to stdout at once: a JSON line, or a YAML document."""
    data = _data(message)
    if output == YAML:
        # "---" ... "...": each document is complete when its end marker is read.
        sys.stdout.write(
            yaml.safe_dump(data, sort_keys=False, allow_unicode=True, explicit_start=True, explicit_end=True)
        )
        sys.stdout.flush()
    else:
        print(json.dumps(data, separators=(",", ":")), flush=True)


def fit_pipe(console: Console) -> None:
    """A console that writes to a pipe or a file gets :data:`PIPE_WIDTH` (rich would use 80
    columns and cut or wrap tables); ``COLUMNS``, when set, still wins."""
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPE_WIDTH
