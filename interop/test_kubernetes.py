"""The Kubernetes manifests in deploy/kubernetes: every document parses, the Deployment, its
Service, probes and scrape annotations name the ports the ConfigMap's gateway config listens on,
the ConfigMap is mounted as a directory at the path `--config` names, and the config itself is
accepted by `tracebridge check` and, moved to 127.0.0.1:0, answers the probe and scrape paths."""

from __future__ import annotations

import subprocess
import tomllib
import urllib.request
from pathlib import Path, PurePosixPath

import pytest
import yaml

from harness import REPO, gateway_binary, start_gateway

MANIFESTS = REPO / "deploy" / "kubernetes"
CONFIG_ARG = "/etc/tracebridge/tracebridge.toml"


def documents() -> list[dict]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        with path.open() as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d is not None)
    return docs


def one(kind: str) -> dict:
    found = [d for d in documents() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container() -> dict:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def container_port(port) -> int:
    """A port as a probe or targetPort names it (a name or a number) -> the container port."""
    ports = container()["ports"]
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in ports], f"no container port {port}"
        return port
    by_name = {p["name"]: p["containerPort"] for p in ports}
    assert port in by_name, f"no container port named {port!r} (have {sorted(by_name)})"
    return by_name[port]


def config_text() -> str:
    data = one("ConfigMap")["data"]
    key = PurePosixPath(CONFIG_ARG).name
    assert key in data, f"ConfigMap has no {key} (keys: {sorted(data)})"
    return data[key]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_manifests_parse_into_one_configmap_deployment_and_service():
    docs = documents()
    assert sorted((d["apiVersion"], d["kind"]) for d in docs) == [
        ("apps/v1", "Deployment"),
        ("v1", "ConfigMap"),
        ("v1", "Service"),
    ]
    assert {d["kind"]: d["metadata"]["name"] for d in docs} == {
        "ConfigMap": "tracebridge-config",
        "Deployment": "tracebridge",
        "Service": "tracebridge",
    }


def test_deployment_runs_the_gateway_on_the_mounted_config_with_config_watch():
    c = container()
    assert c["args"] == ["run", "--config", CONFIG_ARG, "--enable-config-watch"]
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}, kind


def test_configmap_is_mounted_as_a_directory_at_the_config_path():
    spec = one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = [m for m in container()["volumeMounts"] if m["name"] in volumes]
    assert len(mounts) == 1
    mount = mounts[0]
    assert volumes[mount["name"]]["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]
    # A subPath mount is a copy the kubelet never updates: no `..data` swap, no reload.
    assert "subPath" not in mount and "subPathExpr" not in mount
    assert "items" not in volumes[mount["name"]]["configMap"]
    assert str(PurePosixPath(mount["mountPath"]) / PurePosixPath(CONFIG_ARG).name) == CONFIG_ARG
    assert mount.get("readOnly") is True


def test_service_selects_the_pods_and_targets_the_listener_ports():
    deployment, service = one("Deployment"), one("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    config = tomllib.loads(config_text())
    listening = {port_of(listener["address"]) for listener in config["listeners"]}
    targets = {container_port(p["targetPort"]) for p in service["spec"]["ports"]}
    assert targets == listening
    # The admin port is for probes and scrapes, not for callers.
    assert port_of(config["admin"]["listen"]) not in targets


def test_probes_and_scrape_annotations_use_the_admin_port():
    c = container()
    admin = port_of(tomllib.loads(config_text())["admin"]["listen"])
    assert container_port(c["readinessProbe"]["httpGet"]["port"]) == admin
    assert container_port(c["livenessProbe"]["httpGet"]["port"]) == admin
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(admin)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_config_listens_on_all_interfaces_and_names_upstreams_by_service_dns():
    config = tomllib.loads(config_text())
    assert config["admin"]["listen"] == "0.0.0.0:9901"
    http = [listener for listener in config["listeners"] if listener["protocol"] == "http"]
    assert [listener["address"] for listener in http] == ["0.0.0.0:8080"]
    for upstream in config["upstreams"]:
        for endpoint in upstream["endpoints"]:
            host, port = endpoint.rsplit(":", 1)
            assert host.endswith(".svc.cluster.local") and int(port) > 0, endpoint


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [gateway_binary(), "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_tracebridge_check_accepts_the_configmap_config(tmp_path):
    path = tmp_path / "tracebridge.toml"
    path.write_text(config_text())
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok (2 listeners, 3 routes, 3 upstreams)"


def test_tracebridge_check_would_catch_a_broken_endpoint(tmp_path):
    # Proves the check above can fail: the same config with a port-less endpoint is refused.
    text = config_text()
    broken = text.replace('"users.default.svc.cluster.local:8080"', '"users.default.svc.cluster.local"')
    assert broken != text
    path = tmp_path / "tracebridge.toml"
    path.write_text(broken)
    result = check(path)
    assert result.returncode != 0
    assert 'upstreams[0].endpoints[0]: "users.default.svc.cluster.local" is not host:port' in result.stderr


@pytest.fixture
def local_gateway(tmp_path):
    """The ConfigMap's config with every listen address moved to 127.0.0.1:0."""
    text = config_text()
    config = tomllib.loads(text)
    for address in [config["admin"]["listen"]] + [listener["address"] for listener in config["listeners"]]:
        assert text.count(f'"{address}"') == 1, address
        text = text.replace(f'"{address}"', '"127.0.0.1:0"')
    gateway = start_gateway(text, tmp_path)
    yield gateway
    gateway.stop()


def test_probe_and_scrape_paths_answer_on_the_admin_listener(local_gateway):
    c = container()
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    paths = [
        c["readinessProbe"]["httpGet"]["path"],
        c["livenessProbe"]["httpGet"]["path"],
        annotations["prometheus.io/path"],
    ]
    admin = local_gateway.url("admin")
    for path in paths:
        with urllib.request.urlopen(admin + path, timeout=5) as response:
            assert response.status == 200, path
    with urllib.request.urlopen(admin + annotations["prometheus.io/path"], timeout=5) as response:
        assert "tracebridge_" in response.read().decode()
    assert {"edge", "rpc", "admin"} <= set(local_gateway.addresses)
