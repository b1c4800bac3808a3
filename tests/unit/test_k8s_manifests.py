"""deploy/k8s, as `kustomize build` renders the base and each overlay: the references between objects
hold, every Deployment is probed, disrupted and scaled the intended way, and the Secret is wired.

(tests/unit/test_k8s_validation.py checks the same output against the Kubernetes and KEDA schemas,
tests/unit/test_k8s_scaling.py what scales each consumer.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lotlens_gateway.shutdown import SHUTDOWN_S
from tests.k8s import K8S, ROOT, TARGETS, Doc, find, objects, one

NAMESPACE, CONFIGMAP, SECRET = "lotlens", "lotlens-config", "lotlens-secrets"
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
CONSUMERS = [s for s in SERVICES if s != "gateway"]
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CLIENTS|CREDENTIAL|DATABASE_URL", re.IGNORECASE)
# The keys each service needs from the Secret (least privilege), plus the optional Kafka credentials.
SECRETS_NEEDED = {
    "gateway": {"DATABASE_URL", "LOTLENS_CLIENTS", "OPENAI_API_KEY"},
    "vision-batcher": {"DATABASE_URL", "OPENAI_API_KEY"},
    "translator": {"DATABASE_URL", "OPENAI_API_KEY"},
    "result-store": {"DATABASE_URL"},
    "webhook-dispatcher": {"DATABASE_URL", "LOTLENS_CLIENTS"},
}
KAFKA_CREDENTIALS = {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"}


def env_file_keys(path: Path) -> set[str]:
    return {line.split("=", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")}


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, objects(request.param)


def test_objects_of_every_target(target: tuple[str, list[Doc]]) -> None:
    name, docs = target
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), "duplicate objects"
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lotlens", doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE
    expected = {("Namespace", NAMESPACE), ("ConfigMap", CONFIGMAP), ("Job", "lotlens-migrate"),
                ("Service", "lotlens-gateway"), ("HorizontalPodAutoscaler", "lotlens-gateway"),
                *(("Deployment", f"lotlens-{s}") for s in SERVICES),
                *(("PodDisruptionBudget", f"lotlens-{s}") for s in SERVICES),
                *(("ScaledObject", f"lotlens-{s}") for s in CONSUMERS)}
    assert expected <= set(keys)
    secrets = find(docs, "Secret")
    assert len(secrets) == (1 if name == "overlays/local" else 0), "the Secret is never in the base"
    assert bool(find(docs, "TriggerAuthentication")) == (name == "overlays/production")


def test_deployments_selectors_probes_and_no_replica_count(target: tuple[str, list[Doc]]) -> None:
    _, docs = target
    for service in SERVICES:
        deployment = one(docs, "Deployment", f"lotlens-{service}")
        spec = deployment["spec"]
        assert "replicas" not in spec, f"{service}: the HPA or KEDA owns the replica count"
        selector = spec["selector"]["matchLabels"]
        assert selector == {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "lotlens"}
        assert selector.items() <= spec["template"]["metadata"]["labels"].items()
        pod = spec["template"]["spec"]
        container = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"),
                            ("readinessProbe", "/readyz")):
            check = container[probe]["httpGet"]
            assert check["path"] == path, (service, probe)
            assert check["port"] in ports, (service, probe)
        annotations = spec["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) in ports.values(), service
        assert annotations["prometheus.io/path"] == "/metrics"
        wait = pod["initContainers"][0]
        assert wait["command"] == ["python", "-m", "lotlens_common.migrate", "--wait"], service
        assert wait["image"] == container["image"], service
        pdb = one(docs, "PodDisruptionBudget", f"lotlens-{service}")
        assert pdb["spec"]["selector"]["matchLabels"] == selector


def test_no_disruption_budget_blocks_a_drain_while_a_dependency_is_down(
        target: tuple[str, list[Doc]]) -> None:
    # Readiness is PostgreSQL (and Kafka) answering: in an outage every pod is NotReady, and with
    # the default policy (IfHealthyBudget) a budget with no healthy pod to spare allowed no
    # eviction at all: every node drain (an upgrade, a scale-down) hung until the outage ended.
    # Evicting a pod that serves nothing costs nothing.
    _, docs = target
    budgets = find(docs, "PodDisruptionBudget")
    assert {pdb["metadata"]["name"] for pdb in budgets} == {f"lotlens-{s}" for s in SERVICES}
    policies = {pdb["metadata"]["name"]: pdb["spec"].get("unhealthyPodEvictionPolicy") for pdb in budgets}
    assert set(policies.values()) == {"AlwaysAllow"}, policies


def test_gateway_service_hpa_and_pdb(target: tuple[str, list[Doc]]) -> None:
    _, docs = target
    deployment = one(docs, "Deployment", "lotlens-gateway")
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    service = one(docs, "Service", "lotlens-gateway")
    assert all(port["targetPort"] in ports for port in service["spec"]["ports"])
    hpa = one(docs, "HorizontalPodAutoscaler", "lotlens-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "lotlens-gateway"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = one(docs, "PodDisruptionBudget", "lotlens-gateway")
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_the_gateway_serves_metrics_and_probes_on_its_ops_port_which_no_service_exposes(
        target: tuple[str, list[Doc]]) -> None:
    # /metrics and the detailed /health were on the API port, reachable through the Service by
    # anyone who reached the API: the business volume, the outbox backlog, the consumer groups.
    _, docs = target
    template = one(docs, "Deployment", "lotlens-gateway")["spec"]["template"]
    container = template["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["ops"] != ports["http"]
    assert int(template["metadata"]["annotations"]["prometheus.io/port"]) == ports["ops"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("ops", ports["ops"]), probe
    settings = one(docs, "ConfigMap", CONFIGMAP)["data"]
    assert settings["LOTLENS_METRICS_PORT"] == str(ports["ops"])
    assert settings["LOTLENS_METRICS_HOST"] == "0.0.0.0"
    assert settings["LOTLENS_GATEWAY_PORT"] == str(ports["http"])
    for service in find(docs, "Service"):
        targets = {port["targetPort"] for port in service["spec"]["ports"]}
        assert not targets & {"ops", ports["ops"]}, service["metadata"]["name"]


def test_env_comes_from_the_configmap_and_the_secret_with_least_privilege(
        target: tuple[str, list[Doc]]) -> None:
    name, docs = target
    config = one(docs, "ConfigMap", CONFIGMAP)["data"]
    assert not [key for key in config if SECRET_NAME.search(key)]
    assert config["LOTLENS_METRICS_HOST"] == "0.0.0.0"
    assert config["LOTLENS_GATEWAY_HOST"] == "0.0.0.0"
    secret_names = {d["metadata"]["name"] for d in find(docs, "Secret")} or {SECRET}
    example = env_file_keys(K8S / "overlays" / "production" / "secret.example.env")
    for doc in find(docs, "Deployment") + find(docs, "Job"):
        service = doc["metadata"]["labels"]["app.kubernetes.io/name"]
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["envFrom"][0]["configMapRef"]["name"] == CONFIGMAP
            refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"]}
            required = {key for key, ref in refs.items() if not ref.get("optional")}
            optional = {key for key, ref in refs.items() if ref.get("optional")}
            assert all(v["valueFrom"]["secretKeyRef"]["name"] in secret_names for v in container["env"])
            assert all(v["valueFrom"]["secretKeyRef"]["key"] == v["name"] for v in container["env"])
            assert optional == KAFKA_CREDENTIALS, (service, container["name"])
            wanted = SECRETS_NEEDED.get(service, {"DATABASE_URL"}) if container in pod["containers"] \
                else {"DATABASE_URL"}
            assert required == wanted, (service, container["name"])
            assert required | optional <= example
    if name == "overlays/production":
        assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and config["KAFKA_SASL_MECHANISM"]
    for secret in find(docs, "Secret"):
        assert set(SECRETS_NEEDED["gateway"] | SECRETS_NEEDED["vision-batcher"]) <= set(secret["data"])


def test_images_registry_and_digests(target: tuple[str, list[Doc]]) -> None:
    name, docs = target
    for doc in find(docs, "Deployment") + find(docs, "Job"):
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            image = container["image"]
            if name == "overlays/production":
                pinned = r"registry\.example\.com/lotlens/[a-z-]+@sha256:[0-9a-f]{64}"
                assert re.fullmatch(pinned, image), image
            else:
                assert re.fullmatch(r"lotlens/[a-z-]+:(0\.1\.0|dev)", image), image


def test_resources_shutdown_and_security(target: tuple[str, list[Doc]]) -> None:
    _, docs = target
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text(encoding="utf-8")
    image_uid = int(re.findall(r"^USER (\d+)", dockerfile, re.MULTILINE)[-1])
    for doc in find(docs, "Deployment") + find(docs, "Job"):
        pod = doc["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == image_uid
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"] + pod.get("initContainers", []):
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), doc["metadata"]["name"]
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert security["readOnlyRootFilesystem"] is True
            assert {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/tmp"] in volumes
        if doc["kind"] == "Deployment":
            assert pod["terminationGracePeriodSeconds"] >= 30


def test_network_policies_deny_by_default_and_allow_what_each_service_needs(
        target: tuple[str, list[Doc]]) -> None:
    _, docs = target
    policies = {d["metadata"]["name"]: d["spec"] for d in find(docs, "NetworkPolicy")}
    deny = policies["lotlens-default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    def egress_ports(service: str) -> set[int]:
        ports: set[int] = set()
        for spec in policies.values():
            selector = spec["podSelector"]
            labels = selector.get("matchLabels", {})
            chosen = [e["values"] for e in selector.get("matchExpressions", [])]
            applies = (not selector or labels.get("app.kubernetes.io/name") == service
                       or labels == {"app.kubernetes.io/part-of": "lotlens"}
                       or any(service in v for v in chosen))
            if applies:
                ports |= {p["port"] for rule in spec.get("egress", []) for p in rule.get("ports", [])}
        return ports

    for service in SERVICES:
        assert {53, 9092, 5432} <= egress_ports(service), service
    for service in ("gateway", "vision-batcher", "translator", "webhook-dispatcher"):
        assert 443 in egress_ports(service), service
    assert 443 not in egress_ports("result-store")
    gateway_in = policies["lotlens-gateway-ingress"]
    assert [p["port"] for rule in gateway_in["ingress"] for p in rule["ports"]] == [18000]


def test_dns_is_allowed_to_kube_dns_and_to_a_node_local_dns_cache(target: tuple[str, list[Doc]]) -> None:
    # Only kube-dns pods were allowed: on a cluster with NodeLocal DNSCache, whose kubelets point
    # pods at the node's agent (169.254.20.10, host network: no pod selector matches it), every
    # lookup was denied and nothing started (Kafka, PostgreSQL, OpenAI are names).
    _, docs = target
    rules = one(docs, "NetworkPolicy", "lotlens-dns")["spec"]["egress"]
    assert [list(to) for rule in rules for to in rule["to"]] == [
        ["namespaceSelector", "podSelector"], ["ipBlock"]], rules
    rule_to_pods, rule_to_node = rules
    assert rule_to_pods["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert rule_to_node["to"] == [{"ipBlock": {"cidr": "169.254.20.10/32"}}]
    for rule in (rule_to_pods, rule_to_node):
        assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}


def test_the_gateway_may_finish_its_shutdown_before_the_kubelet_kills_it(
        target: tuple[str, list[Doc]]) -> None:
    # 30 s of grace against a 5 s pause, a 30 s drain, a 15 s relay stop and a 30 s flush.
    _, docs = target
    pod = one(docs, "Deployment", "lotlens-gateway")["spec"]["template"]["spec"]
    pause = int(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] >= pause + SHUTDOWN_S


def test_every_service_that_calls_openai_gets_its_key() -> None:
    # Without the key the gateway's synchronous lots went to api.openai.com with the stand-in's
    # placeholder key: every one a 401.
    def calls_openai(service: str) -> bool:
        calls = re.compile(r"\b(make_openai_client|openai_client_for|serve_stage)\(")
        return any(calls.search(path.read_text(encoding="utf-8"))
                   for path in (ROOT / "services" / service / "src").rglob("*.py"))

    assert {s for s in SERVICES if calls_openai(s)} == {
        s for s, keys in SECRETS_NEEDED.items() if "OPENAI_API_KEY" in keys}


def _admits(rule: Doc, namespace: str, port: int) -> bool:
    """Whether an ingress rule lets pods of that namespace in on that port."""
    peers = rule.get("from")
    source = peers is None or any(
        peer.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": namespace}
        for peer in peers)
    return source and ("ports" not in rule or any(p["port"] == port for p in rule["ports"]))


def test_prometheus_may_scrape_every_pod_on_its_annotated_port(target: tuple[str, list[Doc]]) -> None:
    # The production overlay let only the ingress controller reach the gateway's port, where its
    # /metrics is: the outbox alert could never fire, and nothing said so.
    _, docs = target
    policies = [d["spec"] for d in find(docs, "NetworkPolicy") if "Ingress" in d["spec"]["policyTypes"]]
    for doc in find(docs, "Deployment"):
        meta = doc["spec"]["template"]["metadata"]
        labels, port = meta["labels"], int(meta["annotations"]["prometheus.io/port"])
        rules = [rule for spec in policies
                 if spec["podSelector"].get("matchLabels", {}).items() <= labels.items()
                 for rule in spec.get("ingress", [])]
        assert any(_admits(rule, "monitoring", port) for rule in rules), (doc["metadata"]["name"], port)


def test_readme_documents_the_layout() -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for needle in ("overlays/production", "overlays/local", "SASL_SSL", "KEDA", "partition", "NetworkPolic",
                   "external-secret.example.yaml", "migrate --wait", "kubeconform"):
        assert needle in readme, needle
