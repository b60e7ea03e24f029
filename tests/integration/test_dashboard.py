"""The dashboard in a real browser (Debian's Chromium, headless, driven by Playwright) against
a real platform with deployed LB and queue endpoints, jobs and a failing endpoint.

The tests check what a person would: that the numbers match `flash status --json`, that a
cancelled job shows as cancelled, that a new log line appears within 2 s, that a login is
required. Screenshots go to `.ci/artifacts/` for CI to keep.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import flash, platform_in, stop_platform, wait_for

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:
    pytest.skip("playwright is not installed: pip install playwright (the browser is Debian's "
                "chromium: apt-get install chromium)", allow_module_level=True)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed: apt-get install chromium (Playwright drives the "
                "system's browser; none is downloaded)", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parents[2] / ".ci" / "artifacts"
PROJECT = textwrap.dedent("""
    import time

    from runpod_flash import CpuLoadBalancerSlsResource, CpuServerlessEndpoint, remote

    api = CpuLoadBalancerSlsResource(name="dash-api", workersMin=1, workersMax=1)
    broken = CpuLoadBalancerSlsResource(name="dash-broken", workersMin=1, workersMax=1)
    queue = CpuServerlessEndpoint(name="dash-jobs", workersMax=1)

    @remote(api, method="GET", path="/hello")
    async def hello(name: str = "world"):
        print(f"hello {name}", flush=True)
        return {"hello": name}

    @remote(broken, method="GET", path="/boom")
    async def boom():
        raise RuntimeError("this endpoint always fails")

    @remote(queue)
    def slow(seconds: float) -> float:
        time.sleep(seconds)
        return seconds
""")


class Platform:
    """A private FLASH_HOME whose platform samples every second, with the project deployed."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.env = {"FLASH_HOME": str(self.home), "FLASH_PLATFORM_PORT": "0",
                    "FLASH_DASHBOARD_SAMPLE_S": "1"}
        project = root / "project"
        project.mkdir()
        (project / "dash.py").write_text(PROJECT)
        started = flash("platform", "start", env=self.env)
        assert started.returncode == 0, started.stderr
        deployed = flash("deploy", str(project), "--json", env=self.env)
        assert deployed.returncode == 0, deployed.stderr
        self.urls = {r["name"]: r["url"] for r in json.loads(deployed.stdout)}
        client = platform_in(self.home)
        assert client is not None
        self.url, self.token = client.url, client.token

    def status(self) -> dict[str, Any]:
        """What `flash status --json` prints."""
        result = flash("status", "--json", env=self.env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def login_link(self) -> str:
        result = flash("dashboard", "--url", env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def http(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            url, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def submit(self, seconds: Any) -> str:
        status, body = self.http("POST", self.urls["dash-jobs"] + "/run",
                                 {"input": {"function": "slow", "seconds": seconds}})
        assert status == 200, body
        return str(body["id"])


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    made = Platform(tmp_path_factory.mktemp("dashboard"))
    try:
        yield made
    finally:
        stop_platform(made.home)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, platform: Platform) -> Iterator[Page]:
    """A browser tab signed in through a `flash dashboard --url` link."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.goto(platform.login_link())
    assert opened.locator("h1").inner_text() == "Endpoints"
    yield opened
    context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def test_a_login_is_required_and_a_login_link_works_once(
        browser: Browser, platform: Platform) -> None:
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(platform.url + "/dashboard/queue")
    assert "/dashboard/login" in tab.url and tab.locator("h1").inner_text().startswith("Sign in")
    tab.get_by_label("Platform token or API key").fill("not-the-token")
    tab.get_by_role("button", name="Sign in").click()
    assert "not this platform's token" in tab.get_by_role("alert").inner_text()
    shot(tab, "login-refused")
    tab.get_by_label("Platform token or API key").fill(platform.token)
    tab.get_by_role("button", name="Sign in").click()
    assert tab.url.endswith("/dashboard/queue")  # back where the person was going
    link = platform.login_link()
    stranger = browser.new_context().new_page()
    stranger.goto(link)
    assert stranger.locator("h1").inner_text() == "Endpoints"
    again = browser.new_context().new_page()
    again.goto(link)
    assert "used already or has expired" in again.get_by_role("alert").inner_text()
    # Actions need the session's CSRF token, whoever holds the cookie.
    refused = tab.request.post(platform.url + "/dashboard/queue/dash-jobs/purge",
                               form={"csrf": "forged"})
    assert refused.status == 403 and "CSRF" in refused.text()
    tab.get_by_role("button", name="Sign out").click()
    tab.goto(platform.url + "/dashboard")
    assert "/dashboard/login" in tab.url
    context.close()


def _row_texts(page: Page, endpoint_id: str) -> dict[str, str]:
    row = page.locator(f'tr[data-endpoint="{endpoint_id}"]')
    return {name: row.locator(f".col-{name}").inner_text().strip()
            for name in ("status", "workers", "url", "cold", "queue", "type")}


def _expected(endpoint: dict[str, Any]) -> dict[str, str]:
    states = [worker["state"] for worker in endpoint["workers"]]
    queued = endpoint["stats"].get("queued", endpoint["waiting"])
    return {"status": endpoint["status"], "type": endpoint["type"], "url": endpoint["url"],
            "workers": f"{states.count('ready')} ready, {states.count('starting')} starting, "
                       f"{states.count('draining')} draining",
            "cold": str(endpoint["stats"]["cold_starts"]), "queue": str(queued)}


def test_the_endpoint_list_matches_flash_status(page: Page, platform: Platform) -> None:
    def matches() -> bool:
        status = platform.status()
        page.reload()
        shown = {e["id"]: _row_texts(page, e["id"]) for e in status["endpoints"]}
        return status == platform.status() and all(
            shown[e["id"]] == _expected(e) for e in status["endpoints"])

    wait_for(matches, timeout=30, interval=0.5)
    names = page.locator("table.endpoints tbody th.col-name").all_inner_texts()
    assert sorted(names) == ["dash-api", "dash-broken", "dash-jobs"]
    assert page.locator("#heading-deployed").inner_text() == "Deployed (3)"
    shot(page, "endpoints")
    page.get_by_label("Search").fill("broken")  # the list follows the filter as one types
    wait_for(lambda: page.locator("table.endpoints tbody tr").count() == 1, timeout=5)
    assert page.locator("table.endpoints tbody th.col-name").inner_text() == "dash-broken"
    assert "q=broken" in page.url
    page.get_by_label("Search").fill("")
    page.get_by_label("Type").select_option("QB")
    wait_for(lambda: page.locator("table.endpoints tbody th.col-name").all_inner_texts()
             == ["dash-jobs"], timeout=5)


def test_a_failing_endpoint_shows_its_errors_and_charts(page: Page, platform: Platform) -> None:
    for _ in range(5):
        assert platform.http("GET", platform.urls["dash-broken"] + "/boom")[0] == 500
        assert platform.http("GET", platform.urls["dash-api"] + "/hello")[0] == 200

    def error_rate() -> str:
        page.reload()
        return _cells(page, "dash-broken", "errors")

    wait_for(lambda: error_rate() == "100.0%", timeout=10, interval=0.5)
    assert _cells(page, "dash-api", "errors") == "0.0%"
    latency = _cells(page, "dash-api", "latency")
    assert "—" not in latency, latency  # p50 / p95 of the requests just made
    page.locator("th.col-name a", has_text="dash-broken").click()
    assert page.locator("h1").inner_text().startswith("dash-broken")
    errors = page.locator('figure[data-series="errors"]')
    wait_for(lambda: errors.locator("path.series").get_attribute("d"), timeout=5)
    assert "now" in errors.locator(".latest").inner_text()
    assert page.locator("table.workers tbody tr").count() == 1
    assert page.locator("table.workers .col-state").inner_text() == "ready"
    shot(page, "failing-endpoint")


def _cells(page: Page, endpoint_id: str, column: str) -> str:
    return page.locator(f'tr[data-endpoint="{endpoint_id}"] .col-{column}').inner_text().strip()


def test_the_log_tail_shows_a_new_line_within_2_s(page: Page, platform: Platform) -> None:
    page.goto(platform.url + "/dashboard/endpoints/dash-api")
    wait_for(lambda: page.locator("#log-state").inner_text() == "following", timeout=5)
    marker = uuid.uuid4().hex[:12]
    assert platform.http("GET", platform.urls["dash-api"] + f"/hello?name={marker}")[0] == 200
    sent = time.monotonic()
    page.locator("#log", has_text=f"hello {marker}").wait_for(timeout=2000)
    assert time.monotonic() - sent < 2.0
    assert page.get_by_role("link", name="API docs of this endpoint (/docs)").get_attribute(
        "href") == platform.urls["dash-api"] + "/docs"
    shot(page, "log-tail")


def test_a_cancelled_job_shows_cancelled_and_failed_jobs_can_be_retried(
        page: Page, platform: Platform) -> None:
    job_id = platform.submit(30)
    page.goto(f"{platform.url}/dashboard/queue/dash-jobs/jobs/{job_id}")
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Cancel job").click()
    assert page.locator("#job-status").inner_text() == "CANCELLED"
    assert asked == [f"Cancel job {job_id}?"]
    status, body = platform.http("GET", f"{platform.urls['dash-jobs']}/status/{job_id}")
    assert status == 200 and body["status"] == "CANCELLED"
    shot(page, "job-cancelled")
    page.goto(f"{platform.url}/dashboard/queue/dash-jobs?status=CANCELLED")
    assert page.locator(f'tr[data-job="{job_id}"] .col-status').inner_text() == "CANCELLED"

    failing = platform.submit("not a number")
    page.goto(f"{platform.url}/dashboard/queue/dash-jobs/jobs/{failing}")
    wait_for(lambda: page.reload() or page.locator("#job-status").inner_text() == "FAILED",
             timeout=60, interval=0.5)
    assert "TypeError" in page.locator("#job-error").inner_text()
    assert '"seconds": "not a number"' in page.locator("#job-input").inner_text()
    page.get_by_role("button", name="Retry job").click()
    assert page.get_by_role("status").inner_text() == "Queued again."
    assert "retried 1" in page.locator(".facts").inner_text()
    page.goto(f"{platform.url}/dashboard/queue")
    counts = page.locator('tr[data-endpoint="dash-jobs"]')
    assert int(counts.locator(".col-cancelled").inner_text()) >= 1
    shot(page, "queue")


def test_purge_asks_first_and_cancels_the_waiting_jobs(page: Page, platform: Platform) -> None:
    page.goto(f"{platform.url}/dashboard/queue/dash-jobs")
    declined: list[str] = []
    page.once("dialog", lambda dialog: (declined.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Purge the queue").click()
    assert declined and declined[0].startswith("Cancel all")
    assert page.get_by_role("status").count() == 0  # dismissed: nothing purged
    ids = [platform.submit(20) for _ in range(4)]  # one worker: most of them wait
    page.reload()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Purge the queue").click()
    notice = page.get_by_role("status").inner_text()
    purged = int(notice.split(": ")[1].split()[0])
    assert purged >= 2, notice
    states = [platform.http("GET", f"{platform.urls['dash-jobs']}/status/{i}")[1]["status"]
              for i in ids]
    assert states.count("CANCELLED") == purged
    for job_id, state in zip(ids, states, strict=True):  # the running ones: stopped too
        if state != "CANCELLED":
            platform.http("POST", f"{platform.urls['dash-jobs']}/cancel/{job_id}")


def test_the_platform_page_shows_version_uptime_and_disk(page: Page, platform: Platform) -> None:
    page.goto(platform.url + "/dashboard/platform")
    version = platform.http("GET", platform.url + "/health")[1]["version"]
    assert page.locator("#platform-version").inner_text() == f"openflash {version}"
    facts = page.locator(".facts").inner_text()
    assert "local" in facts and str(platform.home) in facts
    disk = page.locator("#disk-heading + table").inner_text()
    assert "state.db" in disk and "logs" in disk
    shot(page, "platform")


def test_dashboard_pages_load_nothing_from_elsewhere(page: Page, platform: Platform) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    for path in ("", "/endpoints/dash-api", "/queue", "/platform"):
        page.goto(platform.url + "/dashboard" + path)
    assert requested and all(url.startswith(platform.url) for url in requested), requested
