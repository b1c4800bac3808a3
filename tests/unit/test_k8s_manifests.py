"""deploy/k8s: structural checks of the kustomize base (no cluster, no vendored k8s schemas).

Every YAML document parses; the kinds and names are the expected ones; labels, selectors and
references (ConfigMap/Secret keys, HPA and PDB targets, Service ports) point at things that exist;
images are `lotlens/<service>`; the gateway has its probes.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "lotlens"
CONFIGMAP, SECRET = "lotlens-config", "lotlens-secrets"
OPTIONAL = {"keda-scaledobjects.yaml"}
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CLIENTS|CREDENTIAL|DATABASE_URL", re.IGNORECASE)
# The keys each service reads from the Secret (least privilege: nothing more).
SECRETS_NEEDED = {
    "gateway": {"DATABASE_URL", "LOTLENS_CLIENTS"},
    "vision-batcher": {"DATABASE_URL", "OPENAI_API_KEY"},
    "translator": {"DATABASE_URL", "OPENAI_API_KEY"},
    "result-store": {"DATABASE_URL"},
    "webhook-dispatcher": {"DATABASE_URL", "LOTLENS_CLIENTS"},
}
Doc = dict[str, Any]


# ------------------------------------------------------------------------------------------ loading
def load(path: Path) -> list[Doc]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert all(isinstance(d, dict) for d in docs), path
    return docs


@pytest.fixture(scope="module")
def kustomization() -> Doc:
    docs = load(K8S / "kustomization.yaml")
    assert len(docs) == 1
    return docs[0]


@pytest.fixture(scope="module")
def base(kustomization: Doc) -> list[Doc]:
    """Every object the kustomization applies."""
    return [doc for resource in kustomization["resources"] for doc in load(K8S / resource)]


def objects(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = objects(docs, kind)
    assert name in found, f"no {kind} {name}"
    return found[name]


def workloads(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(name, pod spec) of every Deployment and Job."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def class_default(path: Path, class_name: str, field: str) -> object:
    """A settings field's default, read from the source (no import of the service needed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                        and item.target.id == field and item.value is not None):
                    return ast.literal_eval(item.value)
    raise AssertionError(f"{class_name}.{field} not found in {path}")


# ------------------------------------------------------------------------------------------ structure
def test_every_manifest_parses_into_named_objects() -> None:
    files = sorted(K8S.glob("*.yaml"))
    assert files
    for path in files:
        for doc in load(path):
            assert doc.get("apiVersion") and doc.get("kind"), path
            if doc["kind"] == "Kustomization":
                continue
            assert doc["metadata"]["name"], path
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == NAMESPACE, f"{path}: {doc['metadata']['name']}"
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lotlens", path


def test_kustomization_lists_every_manifest_except_the_optional_ones(kustomization: Doc) -> None:
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == NAMESPACE
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - OPTIONAL
    assert len(kustomization["resources"]) == len(set(kustomization["resources"]))
    assert {image["name"] for image in kustomization["images"]} == {f"lotlens/{s}" for s in SERVICES}


def test_expected_objects(base: list[Doc]) -> None:
    keys = [(d["kind"], d["metadata"]["name"]) for d in base]
    assert len(keys) == len(set(keys)), "duplicate objects"
    expected = {
        ("Namespace", NAMESPACE), ("ConfigMap", CONFIGMAP), ("Secret", SECRET), ("Job", "lotlens-migrate"),
        ("Service", "lotlens-gateway"), ("HorizontalPodAutoscaler", "lotlens-gateway"),
        ("PodDisruptionBudget", "lotlens-gateway"),
        *(("Deployment", f"lotlens-{s}") for s in SERVICES),
    }
    assert set(keys) == expected


def test_deployment_labels_and_selectors_match(base: list[Doc]) -> None:
    for service in SERVICES:
        deployment = one(base, "Deployment", f"lotlens-{service}")
        selector = deployment["spec"]["selector"]["matchLabels"]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector == {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "lotlens"}
        assert selector.items() <= pod_labels.items(), service
        assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == service
        containers = deployment["spec"]["template"]["spec"]["containers"]
        assert [c["name"] for c in containers] == [service]


def test_gateway_service_hpa_and_pdb_point_at_the_gateway(base: list[Doc]) -> None:
    deployment = one(base, "Deployment", "lotlens-gateway")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}

    service = one(base, "Service", "lotlens-gateway")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert target in port_names or target in port_names.values()

    hpa = one(base, "HorizontalPodAutoscaler", "lotlens-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", "lotlens-gateway")
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "replicas" not in deployment["spec"], "the HPA owns the gateway's replica count"

    pdb = one(base, "PodDisruptionBudget", "lotlens-gateway")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_gateway_probes_hit_health(base: list[Doc]) -> None:
    deployment = one(base, "Deployment", "lotlens-gateway")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    configmap = one(base, "ConfigMap", CONFIGMAP)["data"]
    assert int(configmap["LOTLENS_GATEWAY_PORT"]) in port_names.values()
    assert configmap["LOTLENS_GATEWAY_HOST"] == "0.0.0.0"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health", probe
        port = check["port"]
        assert port_names.get(port, port) == int(configmap["LOTLENS_GATEWAY_PORT"]), probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == int(configmap["LOTLENS_GATEWAY_PORT"])


# ------------------------------------------------------------------------------------------ env
def test_env_comes_from_the_configmap_and_the_secret(base: list[Doc]) -> None:
    config_keys = set(one(base, "ConfigMap", CONFIGMAP)["data"])
    secret_keys = set(one(base, "Secret", SECRET)["stringData"])
    for name, pod in workloads(base):
        for container in pod["containers"]:
            assert container["envFrom"] == [{"configMapRef": {"name": CONFIGMAP}}], name
            for var in container.get("env", []):
                assert "value" not in var, f"{name}: {var['name']} is set inline"
                source = var["valueFrom"]
                if "secretKeyRef" in source:
                    ref, keys = source["secretKeyRef"], secret_keys
                    assert ref["name"] == SECRET
                else:
                    ref, keys = source["configMapKeyRef"], config_keys
                    assert ref["name"] == CONFIGMAP
                assert ref["key"] in keys, f"{name}: {ref['key']} is missing"
                assert ref["key"] == var["name"]


def test_each_deployment_gets_the_secrets_it_needs_and_no_more(base: list[Doc]) -> None:
    for service, needed in SECRETS_NEEDED.items():
        container = one(base, "Deployment", f"lotlens-{service}")["spec"]["template"]["spec"]["containers"][0]
        got = {v["name"] for v in container.get("env", []) if "secretKeyRef" in v["valueFrom"]}
        assert got == needed, service
    migrate = one(base, "Job", "lotlens-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert {v["name"] for v in migrate["env"]} == {"DATABASE_URL"}


def test_configmap_is_not_secret_and_the_secret_holds_placeholders(base: list[Doc]) -> None:
    configmap = one(base, "ConfigMap", CONFIGMAP)["data"]
    assert all(isinstance(v, str) for v in configmap.values()), "ConfigMap values must be strings"
    assert not [k for k in configmap if SECRET_NAME.search(k)]
    assert {"KAFKA_BOOTSTRAP_SERVERS", "LOTLENS_TOPIC_PARTITIONS", "LOTLENS_METRICS_PORT"} <= set(configmap)
    secret = one(base, "Secret", SECRET)
    assert secret["type"] == "Opaque" and "data" not in secret
    values = secret["stringData"]
    assert set(values) == {"DATABASE_URL", "OPENAI_API_KEY", "LOTLENS_CLIENTS"}
    for key, value in values.items():
        assert "REPLACE_ME" in value, f"{key} must stay a placeholder in git"
    assert values["DATABASE_URL"].startswith("postgresql+psycopg2://")
    assert isinstance(json.loads(values["LOTLENS_CLIENTS"]), dict)


# ------------------------------------------------------------------------------------------ pods
def test_images_follow_lotlens_service(base: list[Doc], kustomization: Doc) -> None:
    tags = {image["name"]: image["newTag"] for image in kustomization["images"]}
    for service in SERVICES:
        container = one(base, "Deployment", f"lotlens-{service}")["spec"]["template"]["spec"]["containers"][0]
        repository, _, tag = container["image"].partition(":")
        assert repository == f"lotlens/{service}"
        assert tag and tag != "latest" and tag == tags[repository]
    job = one(base, "Job", "lotlens-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].partition(":")[0] in {f"lotlens/{s}" for s in SERVICES}
    assert container["command"] == ["python", "-m", "lotlens_common.migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}


def test_resources_shutdown_security_and_metrics(base: list[Doc]) -> None:
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text(encoding="utf-8")
    image_uid = int(re.findall(r"^USER (\d+)", dockerfile, re.MULTILINE)[-1])
    for name, pod in workloads(base):
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == image_uid, name
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}: {bound}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            if security.get("readOnlyRootFilesystem"):
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert mounts.get("/tmp") in volumes, f"{name}: needs a writable /tmp"
    for service in SERVICES:
        template = one(base, "Deployment", f"lotlens-{service}")["spec"]["template"]
        assert template["spec"]["terminationGracePeriodSeconds"] >= 30, service
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", service
        assert annotations["prometheus.io/path"] == "/metrics", service
        ports = {p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert int(annotations["prometheus.io/port"]) in ports, service


def test_consumers_do_not_outnumber_partitions(base: list[Doc]) -> None:
    partitions = int(one(base, "ConfigMap", CONFIGMAP)["data"]["LOTLENS_TOPIC_PARTITIONS"])
    metrics_port = int(one(base, "ConfigMap", CONFIGMAP)["data"]["LOTLENS_METRICS_PORT"])
    for service in SERVICES:
        if service == "gateway":
            continue
        deployment = one(base, "Deployment", f"lotlens-{service}")
        assert 1 <= deployment["spec"]["replicas"] <= partitions, service
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == metrics_port, service


# ------------------------------------------------------------------------------------------ extras
def test_keda_example_targets_the_vision_batcher(base: list[Doc]) -> None:
    docs = load(K8S / "keda-scaledobjects.yaml")
    assert [d["kind"] for d in docs] == ["ScaledObject"]
    scaled = docs[0]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] in objects(base, "Deployment")
    configmap = one(base, "ConfigMap", CONFIGMAP)["data"]
    assert scaled["spec"]["maxReplicaCount"] == int(configmap["LOTLENS_TOPIC_PARTITIONS"])
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    config = ROOT / "services" / "vision-batcher" / "src" / "lotlens_vision_batcher" / "config.py"
    settings = ROOT / "libs" / "common" / "src" / "lotlens_common" / "settings.py"
    assert trigger["metadata"]["consumerGroup"] == class_default(config, "VisionBatcherSettings", "group_id")
    assert trigger["metadata"]["topic"] == class_default(settings, "TopicSettings", "submissions")
    assert trigger["metadata"]["bootstrapServers"] == configmap["KAFKA_BOOTSTRAP_SERVERS"]


def test_readme_documents_the_external_services() -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for needle in ("Kafka", "PostgreSQL", "managed", "keda-scaledobjects.yaml", "partition"):
        assert needle in readme, needle
