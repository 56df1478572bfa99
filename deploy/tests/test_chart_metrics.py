"""The chart's side of `/metrics`: ServiceMonitors on in production, scraped on the services'
http port at `/metrics`, and a NetworkPolicy that admits the monitoring namespace's Prometheus
(only) to the ports of the services that have one, in both zones; off by default; a
ServiceMonitor without a monitoring namespace refuses to render."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiban_testing.deploytools import helm_binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kiban"
PROFILES = {
    "default": [],
    "dev": ["-f", str(CHART / "values-dev.yaml")],
    "prod": ["-f", str(CHART / "values-prod.yaml")],
}
PORTS = {"kiban-core": [8101, 8103, 8104], "kiban-info": [8102, 8105, 8106]}
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    home = tmp_path_factory.mktemp("helm-home")
    os.environ.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )
    return [str(helm_binary())]


def _template(helm: list[str], profile: str, *sets: str) -> subprocess.CompletedProcess[str]:
    args = [*helm, "template", "kiban", str(CHART), "--kube-version", "1.33.0", *PROFILES[profile]]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)


def render(helm: list[str], profile: str = "default", *sets: str) -> list[Doc]:
    done = _template(helm, profile, *sets)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _metrics_policies(docs: list[Doc]) -> list[Doc]:
    return [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and any(
            peer.get("namespaceSelector", {})
            .get("matchLabels", {})
            .get("kubernetes.io/metadata.name")
            == "monitoring"
            for rule in d["spec"].get("ingress", [])
            for peer in rule["from"]
        )
    ]


def test_production_scrapes_every_service_at_metrics_on_its_http_port(helm: list[str]) -> None:
    docs = render(helm, "prod")
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    services = {
        d["metadata"]["labels"]["app.kubernetes.io/name"]: d for d in docs if d["kind"] == "Service"
    }
    assert {m["metadata"]["labels"]["app.kubernetes.io/name"] for m in monitors} == set(services)
    for monitor in monitors:
        name = monitor["metadata"]["labels"]["app.kubernetes.io/name"]
        service = services[name]
        assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_production_admits_only_the_monitoring_namespace_to_the_service_ports(
    helm: list[str],
) -> None:
    policies = _metrics_policies(render(helm, "prod"))
    assert sorted(p["metadata"]["namespace"] for p in policies) == sorted(PORTS)
    for policy in policies:
        (rule,) = policy["spec"]["ingress"]
        (peer,) = rule["from"]
        # The namespace AND its Prometheus pods, not every pod of the namespace.
        assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
        assert sorted(p["port"] for p in rule["ports"]) == PORTS[policy["metadata"]["namespace"]]
        assert policy["spec"]["policyTypes"] == ["Ingress"]


@pytest.mark.parametrize("profile", ["default", "dev"])
def test_without_service_monitors_nothing_may_scrape(helm: list[str], profile: str) -> None:
    docs = render(helm, profile)
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert not _metrics_policies(docs)


def test_the_scrape_policy_opens_exactly_the_ports_of_monitored_services(
    helm: list[str],
) -> None:
    docs = render(helm, "default", "services.linkage.serviceMonitor.enabled=true")
    assert [
        d["metadata"]["labels"]["app.kubernetes.io/name"]
        for d in docs
        if d["kind"] == "ServiceMonitor"
    ] == ["linkage"]
    (policy,) = _metrics_policies(docs)
    assert policy["metadata"]["namespace"] == "kiban-core"
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [8103]


def test_a_service_monitor_without_a_monitoring_namespace_refuses_to_render(
    helm: list[str],
) -> None:
    done = _template(
        helm, "default", "serviceDefaults.serviceMonitor.enabled=true", "monitoring.namespace="
    )
    assert done.returncode != 0
    assert "monitoring.namespace" in done.stderr


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_service_knows_the_networks_it_serves_metrics_to(
    helm: list[str], profile: str
) -> None:
    deployments = [
        d
        for d in render(helm, profile)
        if d["kind"] == "Deployment" and d["metadata"]["labels"].get("kiban.jp/dev-only") != "true"
    ]
    assert len(deployments) == 6
    for deployment in deployments:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        names = {e["name"] for e in container["env"]}
        assert "KIBAN_ZONE_GUARD__ALLOWED_NETWORKS" in names, deployment["metadata"]["name"]
