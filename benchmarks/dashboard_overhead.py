"""What an open dashboard costs the gateway (issue 14: "the dashboard's polling adds under 2%
to gateway throughput").

Deploys `lb_gateway.py`'s two-worker project and drives the gateway's `GET /hello` with wrk
exactly as `lb_gateway.py` does (concurrency 32: -t2 -c32; concurrency 1: -t1 -c1), under
three conditions, interleaved in every round:

- none: no browser at all;
- blank: a headless Chromium (Playwright) with two tabs on about:blank: the browser's own
  CPU on this machine, without any dashboard traffic (the control);
- dashboard: the same browser signed in through a one-time login code (as `flash dashboard`
  does), one tab on the endpoint list (its rows re-fetched every 5 s) and one on the
  endpoint's page (its charts' JSON every sampling interval, and the log tail's server-sent
  event stream held open). Both tabs are visible (headless), so both poll: the worst case.

The order of the conditions alternates (none, blank, dashboard; then the reverse), both
concurrencies run back to back under each, after a settle pause (page loads and browser
starts are not measured). Reported: every round's figures, each condition's median, and the
median of the per-round paired ratios. The headline is the polling cost, dashboard against
blank in the same round, which leaves out what the browser itself costs on this machine's
shared CPUs (blank against none, reported too). Also per condition: the CPU the browser
used during the runs (from /proc: this process's descendants but the platform's), and the
platform process's CPU per gateway request, so a cost hidden in the noise shows where it
went. Before the loaded rounds, the same conditions at rest (no load): the CPU per second the
polling costs the browser and the platform, as a share of the machine, bounds what it can
take from a CPU-bound gateway, finer than the loaded runs' ±10% noise on a shared machine.
PASS/FAIL against the 2% target does not change the exit status; a broken setup does.

Without Playwright or Chromium (or with `--http`), an HTTP client stands in for the browser:
it loads both pages, reads the URLs and intervals from their data attributes as the pages'
JavaScript does, and fetches them at those intervals with the log stream open; there is no
browser control then, so its headline is dashboard against none.

    python benchmarks/dashboard_overhead.py [--seconds 6] [--rounds 5] [--http]
"""

from __future__ import annotations

import argparse
import http.client
import http.cookiejar
import os
import re
import shutil
import socket
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

sys.path.insert(0, str(Path(__file__).parent))
import lb_gateway  # the project, the deployment and the wrk runs of the gateway benchmark

if TYPE_CHECKING:
    from runpod_flash.control import Platform

TARGET_LOSS = 0.02
SETTLE_S = 3.0  # after a browser start or page load, before wrk starts
AT_REST_S = 8.0  # each window of the at-rest CPU measurement
AT_REST_TRIES = 2
CONCURRENCIES = (32, 1)  # 32 first: the headline
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def login_link(platform: Platform) -> str:
    """A one-time login link, minted with the platform token as `flash dashboard` does."""
    from runpod_flash.platform.dashboard import LOGIN_CODES_PATH

    return platform.url + platform.call("POST", LOGIN_CODES_PATH)["path"]


def endpoint_list(platform: Platform) -> str:
    from runpod_flash.platform.dashboard.views import PREFIX

    return platform.url + PREFIX


def endpoint_page(platform: Platform, endpoint_id: str) -> str:
    return f"{endpoint_list(platform)}/endpoints/{urllib.parse.quote(endpoint_id)}"


def _proc_stats() -> dict[int, tuple[int, float]]:
    """Every process's parent and CPU seconds (user + system), from /proc; empty elsewhere."""
    stats = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stats[int(entry.parent.name)] = lb_gateway.parent_and_cpu(entry.read_text())
        except OSError:  # gone meanwhile
            continue
    return stats


def cpu_seconds(platform_pid: int) -> tuple[float, float]:
    """CPU seconds used so far by this process and its live descendants but the platform's
    tree (the browser and its driver, or the HTTP poller's threads; wrk has exited by then
    and is not counted), and by the platform process itself (the gateway and the dashboard's
    server, not its workers)."""
    stats = _proc_stats()
    ours, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        ours += stats.get(pid, (0, 0.0))[1]
        todo += [child for child, (parent, _) in stats.items()
                 if parent == pid and child != platform_pid]
    return ours, stats.get(platform_pid, (0, 0.0))[1]


class Dashboard(Protocol):
    kind: str
    conditions: tuple[str, ...]

    def show(self, condition: str) -> None: ...
    def requests(self) -> int: ...
    def state(self) -> str: ...
    def close(self) -> None: ...


class BrowserDashboard:
    """A real headless Chromium: one signed-in context, the endpoint list and the endpoint
    page in two tabs (condition "dashboard"), the same tabs on about:blank ("blank"), or no
    browser running ("none")."""

    conditions = ("none", "blank", "dashboard")

    def __init__(self, platform: Platform, endpoint_id: str) -> None:
        from playwright.sync_api import sync_playwright

        self.platform, self.endpoint_id = platform, endpoint_id
        self._playwright = sync_playwright().start()
        self._browser: Any = None
        self._tabs: list[Any] = []
        self._signed_in = False
        self._requests = 0
        try:
            self._launch()  # fails here, before any measurement, when Chromium cannot start
        except Exception:
            self._playwright.stop()
            raise
        self.kind = (f"real browser: headless Chromium {self._browser.version} "
                     f"({CHROMIUM}, driven by Playwright)")

    def _launch(self) -> None:
        self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM,
                                                         args=["--no-sandbox"])
        context = self._browser.new_context(viewport={"width": 1400, "height": 1000})
        self._tabs = [context.new_page(), context.new_page()]
        for tab in self._tabs:
            tab.on("request", self._count)
        self._signed_in = False

    def _count(self, _request: Any) -> None:
        self._requests += 1

    def show(self, condition: str) -> None:
        if condition == "none":
            if self._browser is not None:
                self._browser.close()
                self._browser, self._tabs = None, []
            return
        if self._browser is None:
            self._launch()
        if condition == "blank":
            for tab in self._tabs:
                tab.goto("about:blank")
            return
        listing, endpoint = self._tabs
        if self._signed_in:
            listing.goto(endpoint_list(self.platform))
        else:
            listing.goto(login_link(self.platform))  # redirects to the endpoint list
            self._signed_in = True
        if listing.locator("h1").inner_text() != "Endpoints":
            raise lb_gateway.BenchError(f"the login link did not sign in: {listing.url}")
        endpoint.goto(endpoint_page(self.platform, self.endpoint_id))
        endpoint.wait_for_function(
            "document.getElementById('log-state').textContent === 'following'", timeout=10_000)
        visible = [tab.evaluate("document.visibilityState") for tab in self._tabs]
        if visible != ["visible", "visible"]:
            raise lb_gateway.BenchError(f"the tabs are not both visible ({visible}): "
                                        "a hidden tab does not poll")

    def requests(self) -> int:
        """Requests the tabs have made so far (a round trip first, so Playwright delivers
        the events that arrived while wrk ran)."""
        if self._tabs:
            self._tabs[0].evaluate("0")
        return self._requests

    def state(self) -> str:
        if not self._tabs or self._tabs[1].url == "about:blank":
            return ""
        lines = self._tabs[1].evaluate("document.getElementById('log').childNodes.length")
        status = self._tabs[1].locator("#log-state").inner_text()
        return f"log tail {status}, {lines} lines shown"

    def close(self) -> None:
        if self._browser is not None:
            self._browser.close()
        self._playwright.stop()


class Poller(threading.Thread):
    """An HTTP client doing what the two pages' JavaScript does: loads the endpoint list and
    the endpoint page, then fetches the list's rows and the charts' JSON at the intervals the
    pages carry (data-every), with the log tail's event stream held open."""

    def __init__(self, base: str, cookie: str, listing: str, page: str) -> None:
        super().__init__(daemon=True)
        self.base, self.cookie, self.listing, self.page = base, cookie, listing, page
        self.requests = 0
        self.following = False
        self.stopped = threading.Event()
        self._stream: http.client.HTTPConnection | None = None

    def _get(self, path: str) -> str:
        request = urllib.request.Request(self.base + path, headers={"Cookie": self.cookie})
        with urllib.request.urlopen(request, timeout=10) as answer:
            self.requests += 1
            return str(answer.read().decode())

    @staticmethod
    def _attribute(html: str, element: str, name: str) -> str:
        tag = re.search(rf"<[^>]*{element}[^>]*>", html)
        value = tag and re.search(rf'{name}="([^"]*)"', tag.group(0))
        if not value:
            raise lb_gateway.BenchError(f"no {name} on {element} in the page")
        return value.group(1).replace("&amp;", "&")

    def _follow(self, path: str) -> None:
        host, port = urllib.parse.urlsplit(self.base).netloc.split(":")
        self._stream = http.client.HTTPConnection(host, int(port), timeout=60)
        self._stream.request("GET", path, headers={"Cookie": self.cookie,
                                                   "Accept": "text/event-stream"})
        answer = self._stream.getresponse()
        self.requests += 1
        self.following = answer.status == 200
        try:
            while not self.stopped.is_set() and answer.readline():
                pass
        except OSError:
            pass  # closed by stop()

    def run(self) -> None:
        listing = self._get(self.listing)
        rows = self._attribute(listing, 'id="endpoint-tables"', "data-rows")
        rows_every = float(self._attribute(listing, 'id="endpoint-tables"', "data-every"))
        page = self._get(self.page)
        charts = self._attribute(page, "data-history", "data-history")
        charts_every = max(1.0, float(self._attribute(page, "data-history", "data-every")))
        stream = self._attribute(page, 'id="log"', "data-stream")
        threading.Thread(target=self._follow, args=(stream,), daemon=True).start()
        now = time.monotonic()
        next_rows, next_charts = now + rows_every, now  # the charts load at once, as in JS
        while not self.stopped.is_set():
            now = time.monotonic()
            if now >= next_rows:
                self._get(rows)
                next_rows = now + rows_every
            if now >= next_charts:
                self._get(charts)
                next_charts = now + charts_every
            self.stopped.wait(0.05)

    def stop(self) -> None:
        self.stopped.set()
        if self._stream is not None and self._stream.sock is not None:
            self._stream.sock.shutdown(socket.SHUT_RDWR)
        self.join(timeout=5)


class HttpDashboard:
    """The fallback: a `Poller` while the dashboard is "open", nothing otherwise (there is no
    browser, so no about:blank control)."""

    conditions = ("none", "dashboard")
    kind = ("HTTP poller (no browser): the same URLs at the same intervals as the pages' "
            "JavaScript, read from the pages")

    def __init__(self, platform: Platform, endpoint_id: str) -> None:
        self.platform, self.endpoint_id = platform, endpoint_id
        self._poller: Poller | None = None
        self._requests = 0

    def show(self, condition: str) -> None:
        if condition == "dashboard" and self._poller is None:
            jar = http.cookiejar.CookieJar()
            urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)).open(
                login_link(self.platform)).read()
            cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
            listing, page = (urllib.parse.urlsplit(url).path for url in (
                endpoint_list(self.platform), endpoint_page(self.platform, self.endpoint_id)))
            self._poller = Poller(self.platform.url, cookie, listing, page)
            self._poller.start()
        elif condition != "dashboard":
            self.close()

    def requests(self) -> int:
        return self._requests + (self._poller.requests if self._poller else 0)

    def state(self) -> str:
        if self._poller is None:
            return ""
        return "log tail following" if self._poller.following else "log tail NOT open"

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._requests += self._poller.requests
            self._poller = None


def open_dashboard(platform: Platform, endpoint_id: str, http_only: bool) -> Dashboard:
    """A real browser when Playwright and Chromium are there, the HTTP poller otherwise."""
    if not http_only and CHROMIUM:
        try:
            return BrowserDashboard(platform, endpoint_id)
        except Exception as exc:  # ImportError, or Chromium failing to start
            print(f"no browser ({type(exc).__name__}: {exc}); using the HTTP poller")
    elif not http_only:
        print("no Chromium found (apt-get install chromium); using the HTTP poller")
    return HttpDashboard(platform, endpoint_id)


@dataclass(frozen=True)
class Run:
    round: int
    condition: str
    concurrency: int
    sample: lb_gateway.Sample
    requests: int  # dashboard requests made during the wrk run
    client_cpu_s: float  # the browser (or poller) during the wrk run
    platform_cpu_s: float  # the platform process (gateway and dashboard) during the run


def measure(dashboard: Dashboard, url: str, auth: list[str], seconds: float, rounds: int,
            platform_pid: int) -> tuple[list[Run], list[str]]:
    """The interleaved rounds; also what the dashboard looked like at the end of each of its
    runs (its log tail's state)."""
    lb_gateway.measure("gateway", 32, {"gateway": url}, [], 1, auth)  # warm-up
    runs, states = [], []
    for number in range(rounds):
        order = dashboard.conditions if number % 2 == 0 else dashboard.conditions[::-1]
        for condition in order:
            dashboard.show(condition)
            time.sleep(SETTLE_S)
            for concurrency in CONCURRENCIES:
                before = dashboard.requests()
                client, server = cpu_seconds(platform_pid)
                sample = lb_gateway.measure("gateway", concurrency, {"gateway": url}, [],
                                            seconds, auth)
                client_after, server_after = cpu_seconds(platform_pid)
                runs.append(Run(number, condition, concurrency, sample,
                                dashboard.requests() - before, client_after - client,
                                server_after - server))
            if condition == "dashboard":
                states.append(dashboard.state())
    dashboard.show("none")
    return runs, states


def at_rest(dashboard: Dashboard, platform_pid: int) -> dict[str, tuple[float, float]]:
    """CPU seconds per second of the browser (or poller) and of the platform process with
    no load, per condition (median of AT_REST_TRIES windows, order alternating): what the
    polling itself costs, measured where the machine is quiet enough to see it."""
    conditions = dashboard.conditions
    windows: dict[str, list[tuple[float, float]]] = {c: [] for c in conditions}
    for number in range(AT_REST_TRIES):
        for condition in conditions if number % 2 == 0 else conditions[::-1]:
            dashboard.show(condition)
            time.sleep(SETTLE_S)
            client, server = cpu_seconds(platform_pid)
            time.sleep(AT_REST_S)  # the window measured
            client_after, server_after = cpu_seconds(platform_pid)
            windows[condition].append(((client_after - client) / AT_REST_S,
                                       (server_after - server) / AT_REST_S))
    return {c: (statistics.median(w[0] for w in windows[c]),
                statistics.median(w[1] for w in windows[c])) for c in conditions}


def report_at_rest(rest: dict[str, tuple[float, float]]) -> None:
    """The polling's CPU at rest, as a share of the machine: a CPU-bound gateway loses at
    most that share of its throughput to it (the bound the noisy throughput runs cannot
    resolve below ±10% on a shared machine)."""
    control = "blank" if "blank" in rest else "none"
    cpus = os.cpu_count() or 1
    print("\nat rest (no load), CPU per second: " + ", ".join(
        f"{c}: browser/poller {b * 1000:.1f} ms, platform {p * 1000:.1f} ms"
        for c, (b, p) in rest.items()))
    browser = rest["dashboard"][0] - rest[control][0]
    platform = rest["dashboard"][1] - rest[control][1]
    share = max(0.0, browser + platform) / cpus
    print(f"  the dashboard's polling over {control}: browser/poller {browser * 1000:+.1f} ms/s, "
          f"platform {platform * 1000:+.1f} ms/s = {share * 100:.2f}% of the machine's "
          f"{cpus} CPUs")
    print(f"  [{'PASS' if share < TARGET_LOSS else 'FAIL'}] the polling's CPU, {share * 100:.2f}%"
          f" of the machine, bounds what it can take from a CPU-bound gateway: target under "
          f"{TARGET_LOSS * 100:g}%")


def loss(ratio: float) -> str:
    return f"{(1 - ratio) * 100:+.1f}%"


def report(runs: list[Run], conditions: tuple[str, ...], rounds: int, seconds: float) -> None:
    """Per-round figures, medians, paired ratios and PASS/FAIL (the headline: c=32)."""
    control = "blank" if "blank" in conditions else "none"
    pairs = [("dashboard", control, "polling cost" if control == "blank" else "dashboard cost")]
    if control == "blank":
        pairs += [("blank", "none", "browser's own cost"), ("dashboard", "none", "total")]
    checks = []
    for concurrency in CONCURRENCIES:
        cell = {(r.round, r.condition): r for r in runs if r.concurrency == concurrency}
        print(f"\nconcurrency {concurrency}: gateway req/s (p50 ms) per round")
        print(f"{'round':5s} {'order':24s} " + " ".join(f"{c:>16s}" for c in conditions)
              + " " + " ".join(f"{a + '/' + b:>16s}" for a, b, _ in pairs) + "  dash reqs")
        for number in range(rounds):
            order = conditions if number % 2 == 0 else conditions[::-1]
            got = {c: cell[(number, c)].sample for c in conditions}
            values = " ".join(f"{got[c].rps:8.0f} ({got[c].p50_ms:5.2f})" for c in conditions)
            ratios = " ".join(f"{got[a].rps / got[b].rps:16.3f}" for a, b, _ in pairs)
            print(f"{number + 1:<5d} {'>'.join(order):24s} {values} {ratios}  "
                  f"{cell[(number, 'dashboard')].requests:9d}")
        medians = {c: statistics.median(cell[(n, c)].sample.rps for n in range(rounds))
                   for c in conditions}
        p50s = {c: statistics.median(cell[(n, c)].sample.p50_ms for n in range(rounds))
                for c in conditions}
        print(f"{'median':30s} " + " ".join(f"{medians[c]:8.0f} ({p50s[c]:5.2f})"
                                             for c in conditions))
        client = {c: statistics.median(r.client_cpu_s for r in runs
                                       if r.concurrency == concurrency and r.condition == c)
                  for c in conditions}
        server = {c: statistics.median(r.platform_cpu_s / (r.sample.rps * seconds) * 1e6
                                       for r in runs
                                       if r.concurrency == concurrency and r.condition == c)
                  for c in conditions}
        print("  CPU during the runs (median): browser/poller "
              + ", ".join(f"{c} {client[c] / seconds * 100:.1f}%" for c in conditions)
              + " of one core; platform process "
              + ", ".join(f"{c} {server[c]:.0f} us" for c in conditions)
              + " per gateway request")
        cpus = os.cpu_count() or 1
        extra = (client["dashboard"] - client[control]) / seconds
        print(f"  c={concurrency:<2d} CPU the dashboard adds over {control} (medians): browser/"
              f"poller {extra * 100:+.1f}% of one core ({extra / cpus * 100:+.2f}% of the "
              f"machine's {cpus} CPUs), platform process "
              f"{server['dashboard'] - server[control]:+.0f} us per gateway request "
              f"({(server['dashboard'] / server[control] - 1) * 100:+.1f}%)")
        for a, b, name in pairs:
            ratios = [cell[(n, a)].sample.rps / cell[(n, b)].sample.rps for n in range(rounds)]
            paired = statistics.median(ratios)
            print(f"  c={concurrency:<2d} {name:18s} ({a} vs {b}): median paired ratio "
                  f"{paired:.3f} -> {loss(paired)} throughput lost (ratio of medians "
                  f"{medians[a] / medians[b]:.3f} -> {loss(medians[a] / medians[b])}); "
                  f"paired ratios ranged {min(ratios):.3f}..{max(ratios):.3f}")
            if a == "dashboard" and b == control:
                checks.append((concurrency, 1 - paired, (max(ratios) - min(ratios)) / 2))
    print()
    for concurrency, lost, spread in checks:
        headline = " (headline)" if concurrency == 32 else ""
        print(f"  [{'PASS' if lost < TARGET_LOSS else 'FAIL'}] c={concurrency}: the "
              f"dashboard's {'polling' if control == 'blank' else 'traffic'} costs the "
              f"gateway {lost * 100:.1f}% of its throughput, target under "
              f"{TARGET_LOSS * 100:g}%{headline}")
        if spread > TARGET_LOSS:
            print(f"         inconclusive on this machine: the paired ratios spread "
                  f"±{spread * 100:.0f}%, more than the target itself; the CPU the "
                  "dashboard adds (above) is the finer measure")


def run(seconds: float, rounds: int, http_only: bool) -> None:
    """Deploy, open the dashboard by turns, measure, report; the browser and the platform
    are stopped whatever happens."""
    dashboard: Dashboard | None = None
    load = os.getloadavg()
    with lb_gateway.deployed("flash-bench-dashboard") as (platform, results):
        try:
            url = f"{platform.url}{results[0]['path']}/hello"
            auth = f"Bearer {platform.token}"
            if lb_gateway.get_status(url, {"Authorization": auth}) != 200:
                raise lb_gateway.BenchError(f"the gateway does not answer 200 at {url}")
            from runpod_flash.platform.dashboard.history import sample_interval_s

            dashboard = open_dashboard(platform, results[0]["id"], http_only)
            print(f"dashboard: {dashboard.kind}")
            print(f"  polled while open: the endpoint list's rows every 5 s, the endpoint "
                  f"page's charts every {sample_interval_s():g} s, one log-tail event stream "
                  "(the platform reads the log files every 0.5 s for it)")
            if "blank" in dashboard.conditions:
                print("  conditions: none = no browser; blank = the browser, both tabs on "
                      "about:blank (its own CPU, no polling); dashboard = both tabs signed "
                      "in on the list and the endpoint page")
                print("  headline: dashboard vs blank in the same round = the polling's "
                      "cost alone; blank vs none = the browser's own cost on these "
                      "shared CPUs")
            else:
                print("  conditions: none = no dashboard; dashboard = the poller running "
                      "(no browser, so no browser control: the headline is dashboard vs "
                      "none)")
            print(f"  wrk {seconds:g} s per run on {url} (c=32: -t2 -c32, c=1: -t1 -c1), "
                  f"{rounds} rounds, order alternating, {SETTLE_S:g} s settle after each "
                  "switch")
            rest = at_rest(dashboard, lb_gateway.platform_pid())
            runs, states = measure(dashboard, url, [f"Authorization: {auth}"], seconds, rounds,
                                   lb_gateway.platform_pid())
            conditions = dashboard.conditions
        finally:
            if dashboard is not None:
                dashboard.close()
    print("dashboard state at the end of its runs: " + "; ".join(sorted(set(states))))
    print(f"load average: {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, on "
          f"{os.cpu_count()} CPUs (other work on the machine is noise the pairing only "
          "partly cancels)")
    report(runs, conditions, rounds, seconds)
    report_at_rest(rest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--http", action="store_true",
                        help="the HTTP poller instead of a real browser")
    options = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("missing wrk: install with `apt-get install wrk`")
    try:
        run(options.seconds, options.rounds, options.http)
    except lb_gateway.BenchError as exc:
        sys.exit(f"broken: {exc}")


if __name__ == "__main__":
    main()
