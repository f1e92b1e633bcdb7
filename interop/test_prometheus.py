"""A real Prometheus (Debian's `prometheus` package) scrapes the gateway's admin `/metrics`:
the exposition parses, the counters it stores are the exact counts of the traffic sent, and
every query of the Grafana dashboard in deploy/grafana/ evaluates on the stored series."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from harness import REPO, W3cUpstream, http_config, start_gateway, wait_for

DASHBOARD = REPO / "deploy" / "grafana" / "tracebridge.json"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def free_port() -> int:
    # Prometheus prints the configured listen address, not the port it got for :0; so a port
    # is picked free here and handed to it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, target: str, work: Path):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: apt-get install prometheus (.ci/run does)")
        config = work / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: tracebridge\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(work / "prometheus.log", "w"),  # noqa: SIM115 (lives with the process)
        )
        self.log = work / "prometheus.log"

    def api(self, path: str, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)

    def value(self, expr: str) -> float | None:
        result = self.api("query", query=expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def get(url: str, headers: dict) -> int:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def scraped():
    upstream = W3cUpstream()
    work = Path(tempfile.mkdtemp())
    gateway = start_gateway(http_config(upstream.address, None), work)
    # The traffic: 5 calls continuing a W3C trace, 2 with a broken traceparent (a new trace).
    for i in range(5):
        assert get(f"{gateway.url()}/ok/{i}", {"traceparent": f"00-{TRACE}-00f067aa0ba902b{i}-01"}) == 200
    for i in range(2):
        assert get(f"{gateway.url()}/broken/{i}", {"traceparent": "00-nothex-00f067aa0ba902b7-01"}) == 200
    prometheus = Prometheus(gateway.addresses["admin"], work)

    def scraped_up():
        try:
            targets = prometheus.api("targets")["data"]["activeTargets"]
        except OSError:
            return None
        return [t for t in targets if t["health"] == "up"]

    try:
        (target,) = wait_for(scraped_up, 30.0, "Prometheus to scrape the gateway")
        yield prometheus, target, gateway
    finally:
        prometheus.stop()
        gateway.stop()
        upstream.stop()


def test_prometheus_scrapes_the_exact_counts(scraped):
    prometheus, target, _ = scraped
    assert target["lastError"] == ""
    assert target["scrapeUrl"].endswith("/metrics")
    assert prometheus.value('up{job="tracebridge"}') == 1.0
    assert prometheus.value('sum(tracebridge_requests_total{listener="edge",code="200"})') == 7.0
    assert prometheus.value('sum(tracebridge_request_duration_seconds_count{listener="edge"})') == 7.0
    assert prometheus.value('sum(tracebridge_upstream_requests_total{upstream="svc"})') == 7.0
    assert prometheus.value('sum(tracebridge_trace_extract_total{format="w3c",result="ok"})') == 5.0
    assert prometheus.value('sum(tracebridge_trace_extract_total{format="w3c",result="invalid"})') == 2.0
    assert prometheus.value('sum(tracebridge_connections_total{listener="edge"})') >= 1.0
    # Registered at zero, so dashboards and alerts have a series before the first error.
    assert prometheus.value("sum(tracebridge_spans_dropped_total)") == 0.0


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]


def test_every_dashboard_query_evaluates_on_the_scraped_series(scraped):
    prometheus, _, _ = scraped
    # The metric names are a contract, documented at the head of the metrics module (families
    # with labels appear in /metrics only once they have a series).
    header = (REPO / "src" / "telemetry" / "metrics.rs").read_text().split("\n\n")[0]
    documented = set(re.findall(r"`(tracebridge_[a-z_]+)`", header))
    assert "tracebridge_requests_total" in documented
    queries = dashboard_queries()
    assert len(queries) >= 14
    for title, expr in queries:
        # Grafana's variables, as Grafana would expand them for "All" over a 1-minute window.
        promql = expr.replace("$__rate_interval", "1m").replace('"$listener"', '".*"')
        answer = prometheus.api("query", query=promql)
        assert answer["status"] == "success", f"{title}: {promql}: {answer}"
        for name in re.findall(r"tracebridge_[a-z_]+", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert name in documented or base in documented, f"{title}: {name} is no tracebridge metric"
    # The listener variable's query finds the gateway's listener.
    answer = prometheus.api("label/listener/values", **{"match[]": "tracebridge_requests_total"})
    assert answer["data"] == ["edge"]
