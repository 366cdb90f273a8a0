"""Free loopback ports for tests: one place. A port is free when the kernel hands it out for a
bind; it stays free only until someone else binds it, so callers that need several ports take
them together (:func:`free_ports`, all held until every one is chosen: never the same twice)."""

from __future__ import annotations

import socket


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the OS reports free now on ``host``."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port the OS reports free now (take several at once with :func:`free_ports`)."""
    return free_ports(1, host)[0]


def free_port_run(count: int, host: str = "127.0.0.1", tries: int = 100) -> int:
    """The first of ``count`` consecutive ports the OS reports free now (the suite gives its
    workload services consecutive ports from one base)."""
    for _ in range(tries):
        held: list[socket.socket] = []
        try:
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            first.bind((host, 0))
            held.append(first)
            base = int(first.getsockname()[1])
            if base + count - 1 > 65535:
                continue
            for port in range(base + 1, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports found in {tries} tries")
