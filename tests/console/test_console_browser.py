"""The console in a real headless Chromium (Debian's, driven by Selenium and chromedriver),
against the suite as `make run` starts it (with the gateway's token, which the suite hands to the
console): a Redis instance of 3, its master's redis-server killed with SIGKILL, and after the
failover the instance list, the instance page (the new master, the recovery plan's steps) and the
recovery's timeline (one row per step, the fence and failover bars wider than 0) read right. A
screenshot goes to tmp_path and build/test-artefacts/. Then without a browser: an unknown
instance is a 404 page, a wrong token and a gateway that is down are said so (401, 503)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from lifecycle.e2e_helpers import kill9, redis_pids_under
from suite.suite_helpers import service_ports, start_suite, stop_suite, suite_env, wait_until

from console.http import http_get
from mesos_stateful.api.stateful.v1 import instance_service_pb2 as ipb
from mesos_stateful.api.stateful.v1 import instance_service_pb2_grpc as api_grpc
from mesos_stateful.api.stateful.v1 import types_pb2 as T
from mesos_stateful.testing.lifecycle import is_running, master_of

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "console-test-token"
ARTEFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artefacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


class Api:
    """The public API with the suite's token."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.stub = api_grpc.InstanceServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {TOKEN}"),)

    def get(self, name: str) -> T.Instance:
        reply = self.stub.GetInstance(ipb.GetInstanceRequest(name=name), metadata=self.metadata, timeout=10)
        instance: T.Instance = reply.instance
        return instance

    def workloads(self) -> list[str]:
        try:
            reply = self.stub.ListWorkloads(ipb.ListWorkloadsRequest(), metadata=self.metadata, timeout=5)
        except grpc.RpcError:
            return []
        return [w.name for w in reply.workloads]


def start_console(tmp_path: Path, name: str, gateway: str, token: str) -> tuple[subprocess.Popen[bytes], str]:
    """One more console process (not the suite's) on a free port; returns it and its base URL."""
    (port,) = service_ports([1])
    env = {
        **os.environ,
        "STATEFUL_CONSOLE_LISTEN": f"127.0.0.1:{port}",
        "STATEFUL_CONSOLE_GATEWAY_ENDPOINT": gateway,
        "STATEFUL_CONSOLE_TOKEN": token,
        "STATEFUL_CONSOLE_CALL_TIMEOUT_SECONDS": "2",
    }
    with (tmp_path / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mesos_stateful.console"], env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
        return http_get(f"{url}/health")[0] == 200  # 0 while nothing answers

    wait_until(up, 30, f"console {name} to answer")
    return process, url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: run scripts/install_system_deps.sh (as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """The suite as `make run` starts it, with a token on the gateway; (gateway, console URL, env)."""
    endpoint, env = suite_env(tmp_path / "state")
    (console_port,) = service_ports([1])
    env["STATEFUL_SUITE_CONSOLE"] = f"127.0.0.1:{console_port}"
    env["STATEFUL_GATEWAY_AUTH_TOKEN"] = TOKEN
    env.pop("STATEFUL_CONSOLE_TOKEN", None)
    runner = start_suite(env, tmp_path / "suite.log")
    try:
        yield endpoint, f"http://127.0.0.1:{console_port}", env
    finally:
        stop_suite(runner, 60)


def test_failover_in_the_browser(
    suite: tuple[str, str, dict[str, str]], browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    endpoint, console, env = suite
    api = Api(endpoint)
    wait_until(lambda: "redis" in api.workloads(), 120, "the suite to serve the redis workload")
    api.stub.CreateInstance(
        ipb.CreateInstanceRequest(spec=T.InstanceSpec(name="shop", workload="redis", replicas=3)),
        metadata=api.metadata,
        timeout=30,
    )
    wait_until(lambda: is_running(api.get("shop"), 3), 150, "shop RUNNING with 3 members")
    old = master_of(api.get("shop"))
    pids = redis_pids_under(Path(env["STATEFUL_SUITE_DATA_DIR"]) / "cluster", [old])
    assert pids, f"no redis-server process of {old.id}"
    kill9(pids)

    def failed_over() -> bool:
        now = api.get("shop")
        return (
            is_running(now, 3)
            and master_of(now).id != old.id
            and now.plan.name == "recovery"
            and now.plan.status == T.STEP_STATUS_COMPLETE
        )

    wait_until(failed_over, 120, "the failover to a new master, the recovery plan complete")
    after = api.get("shop")
    new_master = master_of(after).id
    plan = after.plan
    # The lifecycle stamps every step it ran (Step.started_at / finished_at).
    ran = [s for s in plan.steps if s.HasField("started_at")]
    fence_and_failover = [s for s in plan.steps if s.name.split(" ")[0] in ("fence", "failover")]
    assert {s.name.split(" ")[0] for s in fence_and_failover} == {"fence", "failover"}, plan
    for s in ran:
        assert s.HasField("finished_at"), s
        assert s.finished_at.ToNanoseconds() >= s.started_at.ToNanoseconds(), s
    assert all(s in ran for s in fence_and_failover)

    # The instance list.
    browser.get(f"{console}/")
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-name='shop']")
    assert row.find_element(By.CLASS_NAME, "phase").text == "RUNNING"
    assert row.find_element(By.CLASS_NAME, "ready").text == "3/3"
    assert "recovery COMPLETE" in row.find_element(By.CLASS_NAME, "plan").text
    browser.save_screenshot(str(tmp_path / "console-instances.png"))

    # The instance page: the new master, the recovery's steps, recent events from the watch.
    browser.get(f"{console}/instances/shop")
    master_row = browser.find_element(By.CSS_SELECTOR, f"tr[data-member='{new_master}']")
    assert master_row.find_element(By.CLASS_NAME, "role").text == "MASTER"
    assert browser.find_element(By.ID, "plan-name").text == "recovery"
    step_rows = browser.find_elements(By.CSS_SELECTOR, "#plan tr[data-step]")
    assert [r.get_attribute("data-step") for r in step_rows] == [s.name for s in plan.steps]
    fence_text = browser.find_element(By.CSS_SELECTOR, "#plan").text
    assert "fence:" in fence_text and f"promote {new_master}" in fence_text
    events = browser.find_element(By.ID, "events").text
    assert f"member {new_master} role SLAVE -> MASTER" in events, events

    # The timeline: a waterfall, one row per step with start -> end and the gap before it; the
    # fence and the failover have bars wider than 0; detection and the time the new master became
    # writable (its master-running's finished_at) above it.
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline .tlrow[data-step]")
    assert [r.get_attribute("data-step") for r in rows] == [s.name for s in plan.steps]
    for row in rows:
        step = row.get_attribute("data-step")
        assert step is not None  # every row has one (the list above)
        if step.split(" ")[0] in ("fence", "failover"):
            bar = row.find_element(By.CLASS_NAME, "bar")
            assert bar.size["width"] > 0, row.get_attribute("data-step")
            assert "→" in row.find_element(By.CLASS_NAME, "tlwhen").text
            assert row.find_element(By.CLASS_NAME, "tlgap").text.endswith(" gap")
    assert "detected" in browser.find_element(By.ID, "timeline-total").text
    assert browser.find_element(By.ID, "detection").text.startswith("detection ")
    assert browser.find_element(By.ID, "detection-row").find_element(By.CLASS_NAME, "bar")
    running = next(s for s in plan.steps if s.name == f"master-running {new_master}")
    writable = datetime.fromtimestamp(running.finished_at.ToNanoseconds() / 1e9, UTC).strftime("%H:%M:%S")
    shown = browser.find_element(By.ID, "writable").text
    assert shown.startswith(f"new master writable {writable}.") and "after detected" in shown, shown

    # Live updates: the page keeps its content after the JSON endpoint refreshed it.
    browser.set_window_size(1400, 2400)  # the whole page in the screenshot
    stamp = browser.find_element(By.ID, "live").text
    wait_until(lambda: browser.find_element(By.ID, "live").text != stamp, 10, "a live refresh")
    browser.save_screenshot(str(tmp_path / "console-instance.png"))
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for shot in ("console-instances.png", "console-instance.png"):
        assert (tmp_path / shot).stat().st_size > 0
        shutil.copy(tmp_path / shot, ARTEFACTS / shot)

    # Without a browser: an unknown instance, a wrong token, a gateway that is down.
    status, text = http_get(f"{console}/instances/nosuch")
    assert status == 404 and "does not exist" in text and "Traceback" not in text
    status, text = http_get(f"{console}/instances/%3Cscript%3E")  # not a valid instance name
    assert status == 400 and "<script>" not in text and "Traceback" not in text, (status, text)
    wrong, wrong_url = start_console(tmp_path, "wrong-token", endpoint, "not-the-token")
    (dead_port,) = service_ports([1])
    down, down_url = start_console(tmp_path, "no-gateway", f"127.0.0.1:{dead_port}", TOKEN)
    try:
        status, text = http_get(f"{wrong_url}/")
        assert status == 401 and "refused the console&#x27;s token" in text, text
        status, text = http_get(f"{down_url}/instances/shop")
        assert status == 503 and "cannot get" in text and "Traceback" not in text, text
    finally:
        for process in (wrong, down):
            process.terminate()
            process.wait(10)
