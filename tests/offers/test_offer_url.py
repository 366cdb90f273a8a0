"""Where a task's sandbox is served: the agent URL from the offer's `url` (mesos.proto Offer.url)
and the virtual sandbox path every Mesos agent attaches (slave/paths.cpp getExecutorVirtualPath)."""

from __future__ import annotations

from mesos_stateful.offers import mesos


def test_agent_url_from_the_offer() -> None:
    address: dict[str, object] = {"hostname": "agent-7.example", "ip": "10.0.0.7", "port": 5051}
    offer = {"url": {"scheme": "http", "address": address, "path": "/slave(1)"}}
    assert mesos.agent_url(offer) == "http://10.0.0.7:5051"
    del address["ip"]
    assert mesos.agent_url(offer) == "http://agent-7.example:5051"
    assert mesos.agent_url({}) == ""
    assert mesos.agent_url({"url": {"address": {"ip": "10.0.0.7"}}}) == ""  # no port
    parsed = mesos.parse_offer({"id": {"value": "o1"}, "agent_id": {"value": "a1"}, **offer})
    assert parsed.url == "http://agent-7.example:5051"


def test_sandbox_path() -> None:
    assert mesos.sandbox_path("F-0001", "cache-0.3") == "/frameworks/F-0001/executors/cache-0.3/runs/latest"
    assert mesos.sandbox_path("", "cache-0.3") == ""
