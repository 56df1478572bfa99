"""The Helm chart, checked offline: lint, render with default/dev/production values, validate every
object against the Kubernetes schemas of a current version, and policy tests over what renders —
the zone fence must hold in the manifests, not in a runbook."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate as kv
import pytest
import yaml

from kiban_testing.deploytools import helm_binary, skaffold_schema

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kiban"
K8S = "1.33.0"
PROFILES = {
    "default": [],
    "dev": ["-f", str(CHART / "values-dev.yaml")],
    "prod": ["-f", str(CHART / "values-prod.yaml")],
}
CORE = {"intake", "linkage", "anonymizer"}
INFORMATION = {"optout", "review", "release"}
ALLOW_UNKNOWN_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

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


def _helm(helm: list[str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*helm, *args], capture_output=True, text=True, check=check, timeout=120)


def render(helm: list[str], profile: str = "default", *sets: str) -> list[Doc]:
    args = ["template", "kiban", str(CHART), "--kube-version", K8S, *PROFILES[profile]]
    for s in sets:
        args += ["--set", s]
    out = _helm(helm, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def service_of(doc: Doc) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/name"])


def kiban_deployments(docs: list[Doc]) -> list[Doc]:
    return [
        d
        for d in of_kind(docs, "Deployment")
        if d["metadata"]["labels"].get("kiban.jp/dev-only") != "true"
    ]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_chart_lints_strictly(helm: list[str], profile: str) -> None:
    result = _helm(helm, "lint", str(CHART), "--strict", *PROFILES[profile], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_rendered_object_is_valid_for_a_current_kubernetes(
    helm: list[str], profile: str
) -> None:
    problems = []
    for doc in render(helm, profile):
        key = (doc.get("apiVersion"), doc.get("kind"))
        try:
            kv.validate(doc, K8S, strict=True)
        except kv.SchemaNotFoundError:
            if key not in ALLOW_UNKNOWN_KINDS:
                problems.append(f"no schema for {key}")
        except kv.ValidationError as exc:
            problems.append(f"{key} {doc['metadata']['name']}: {list(exc.path)} {exc.message}")
    assert problems == []


def test_a_wrong_value_fails_install_with_a_message_naming_it(helm: list[str]) -> None:
    result = _helm(
        helm,
        "template",
        "kiban",
        str(CHART),
        "--kube-version",
        K8S,
        "--set",
        "services.optout.zone=core",
        check=False,
    )
    assert result.returncode != 0
    assert "/services/optout/zone" in result.stderr
    unknown = _helm(
        helm,
        "template",
        "kiban",
        str(CHART),
        "--kube-version",
        K8S,
        "--set",
        "replicaz=3",
        check=False,
    )
    assert unknown.returncode != 0
    assert "replicaz" in unknown.stderr


def test_an_egress_target_without_a_destination_refuses_to_render(helm: list[str]) -> None:
    # An empty `to:` in a NetworkPolicy means "everywhere": the chart must not produce it.
    result = _helm(
        helm,
        "template",
        "kiban",
        str(CHART),
        "--kube-version",
        K8S,
        "--set",
        "kafka.namespace=",
        check=False,
    )
    assert result.returncode != 0
    assert "needs cidrs or a namespace" in result.stderr


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_service_deployment_is_probed_limited_and_restricted(
    helm: list[str], profile: str
) -> None:
    docs = render(helm, profile)
    deployments = kiban_deployments(docs)
    assert {service_of(d) for d in deployments} == CORE | INFORMATION
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        (container,) = pod["containers"]
        assert container["args"] == ["serve", service_of(deployment)]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["runAsNonRoot"] is True
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"


def test_each_service_has_its_account_service_budget_and_migration_job(helm: list[str]) -> None:
    docs = render(helm)
    for kind in ("ServiceAccount", "Service", "PodDisruptionBudget"):
        assert {service_of(d) for d in of_kind(docs, kind)} == CORE | INFORMATION, kind
    for account in of_kind(docs, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    jobs = of_kind(docs, "Job")
    assert {j["spec"]["template"]["spec"]["containers"][0]["args"][1] for j in jobs} == (
        CORE | INFORMATION
    )
    for job in jobs:
        hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
        assert set(hooks) == {"post-install", "pre-upgrade"}
    assert of_kind(docs, "HorizontalPodAutoscaler") == []
    assert of_kind(docs, "ServiceMonitor") == []
    optional = render(
        helm,
        "default",
        "serviceDefaults.hpa.enabled=true",
        "serviceDefaults.serviceMonitor.enabled=true",
    )
    assert len(of_kind(optional, "HorizontalPodAutoscaler")) == 6
    assert len(of_kind(optional, "ServiceMonitor")) == 6


def test_services_run_in_their_zone_namespace(helm: list[str]) -> None:
    docs = render(helm, "default", "zones.core.namespace=kc", "zones.information.namespace=ki")
    for deployment in kiban_deployments(docs):
        expected = "kc" if service_of(deployment) in CORE else "ki"
        assert deployment["metadata"]["namespace"] == expected
    assert {d["metadata"]["name"] for d in of_kind(docs, "Namespace")} == {"kc", "ki"}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_secrets_are_only_referenced_and_the_sealing_private_key_stays_in_core(
    helm: list[str], profile: str
) -> None:
    docs = render(helm, profile)
    assert of_kind(docs, "Secret") == []
    for deployment in kiban_deployments(docs):
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert "secretKeyRef" in env["KIBAN_DATABASE_URL"]["valueFrom"]
        volumes = {v["name"] for v in pod["volumes"]}
        private = "KIBAN_CRYPTO__SEALING_PRIVATE_KEY_FILE" in env
        if service_of(deployment) in CORE:
            assert private
            assert "sealing-private" in volumes
        else:
            assert not private
            assert "sealing-private" not in volumes


def _policies(docs: list[Doc], namespace: str) -> list[Doc]:
    return [d for d in of_kind(docs, "NetworkPolicy") if d["metadata"]["namespace"] == namespace]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_both_zones_deny_all_traffic_by_default(helm: list[str], profile: str) -> None:
    docs = render(helm, profile)
    for namespace in ("kiban-core", "kiban-info"):
        defaults = [
            p
            for p in _policies(docs, namespace)
            if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
        ]
        assert len(defaults) == 1, namespace


@pytest.mark.parametrize("profile", list(PROFILES))
def test_no_rule_allows_every_destination_or_every_source(helm: list[str], profile: str) -> None:
    for policy in of_kind(render(helm, profile), "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), policy["metadata"]["name"]


def _egress_peers(docs: list[Doc], namespace: str) -> list[Doc]:
    return [
        peer
        for policy in _policies(docs, namespace)
        for rule in policy["spec"].get("egress", [])
        for peer in rule["to"]
    ]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_no_information_zone_policy_allows_egress_to_core(helm: list[str], profile: str) -> None:
    docs = render(helm, profile)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if profile != "default":
        values.update(yaml.safe_load(Path(PROFILES[profile][1]).read_text()))
    core_db = [ipaddress.ip_network(c) for c in values["postgres"]["core"].get("cidrs", [])]
    core_db_pods = (
        values["postgres"]["core"].get("namespace"),
        values["postgres"]["core"].get("podLabels"),
    )
    for peer in _egress_peers(docs, "kiban-info"):
        namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
        namespace_name = namespace.get("kubernetes.io/metadata.name")
        assert namespace_name != "kiban-core"
        if "ipBlock" in peer:
            net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
            assert not any(net.overlaps(db) for db in core_db)
        pods = peer.get("podSelector", {}).get("matchLabels")
        if core_db_pods[0]:
            assert (namespace_name, pods) != core_db_pods


@pytest.mark.parametrize("profile", list(PROFILES))
def test_core_egress_goes_only_to_kafka_postgres_and_dns(helm: list[str], profile: str) -> None:
    docs = render(helm, profile)
    ports = sorted(
        {
            port["port"]
            for policy in _policies(docs, "kiban-core")
            for rule in policy["spec"].get("egress", [])
            for port in rule["ports"]
        }
    )
    expected = {"default": [53, 5432, 9092], "dev": [53, 5432, 9092], "prod": [53, 5432, 9094]}
    assert ports == expected[profile]


def test_core_ingress_is_the_gateway_to_intake_and_core_itself(helm: list[str]) -> None:
    docs = render(helm)
    sources = []
    for policy in _policies(docs, "kiban-core"):
        for rule in policy["spec"].get("ingress", []):
            target = policy["spec"]["podSelector"].get("matchLabels", {})
            for peer in rule["from"]:
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                sources.append(
                    (
                        target.get("app.kubernetes.io/name", "*"),
                        ns.get("kubernetes.io/metadata.name"),
                    )
                )
    assert sorted(sources, key=str) == sorted([("*", None), ("intake", "kiban-gateway")], key=str)


def test_information_ingress_comes_from_the_ingress_controller_only(helm: list[str]) -> None:
    docs = render(helm)
    for policy in _policies(docs, "kiban-info"):
        for rule in policy["spec"].get("ingress", []):
            for peer in rule["from"]:
                ns = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                assert ns == "ingress-nginx"
            assert sorted(p["port"] for p in rule["ports"]) == [8102, 8105, 8106]


def test_development_infrastructure_is_off_by_default_and_labelled(helm: list[str]) -> None:
    assert not [d for d in render(helm) if "dev-kafka" in d["metadata"]["name"]]
    dev = render(helm, "dev")
    infra = [d for d in dev if "-dev-" in d["metadata"]["name"]]
    assert {d["kind"] for d in infra} == {"Namespace", "ConfigMap", "Deployment", "Service"}
    assert all(d["metadata"]["labels"]["kiban.jp/dev-only"] == "true" for d in infra)


def test_skaffold_config_is_valid_and_matches_the_chart_and_image() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    jsonschema.validate(config, skaffold_schema(config["apiVersion"].split("/")[1]))
    (artifact,) = config["build"]["artifacts"]
    assert (ROOT / artifact["docker"]["dockerfile"]).exists()
    releases = [config["deploy"]["helm"]["releases"][0]] + [
        p["deploy"]["helm"]["releases"][0] for p in config["profiles"]
    ]
    assert {p["name"] for p in config["profiles"]} == {"dev", "prod"}
    for release in releases:
        assert (ROOT / release["chartPath"] / "Chart.yaml").exists()
        for values in release["valuesFiles"]:
            assert (ROOT / values).exists(), values
        assert artifact["image"] in release["setValueTemplates"]["image.repository"]


def test_dockerfile_final_stage_is_non_root_and_has_no_build_tools() -> None:
    stages = (ROOT / "Dockerfile").read_text().split("\nFROM ")
    assert len(stages) >= 3, "multi-stage"
    final = stages[-1]
    assert "AS runtime" in final.splitlines()[0]
    user = next(line for line in final.splitlines() if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("0", "root")
    assert "uv " not in final
    assert "apt-get" not in final
    assert "gcc" not in final
    assert 'ENTRYPOINT ["kiban"]' in final


def test_values_schema_is_valid_json_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for name in ("values.yaml", "values-dev.yaml", "values-prod.yaml"):
        values = yaml.safe_load((CHART / "values.yaml").read_text())
        _merge(values, yaml.safe_load((CHART / name).read_text()))
        jsonschema.validate(values, schema)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
