"""Entry point ``stateful-localcluster``."""

from __future__ import annotations

from mesos_stateful.localcluster.cli import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
