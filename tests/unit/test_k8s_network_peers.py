"""The NetworkPolicies let each service reach the peers its settings name, judged by the peers a rule
lists, not only its ports: a Service in the cluster (`<name>.<namespace>.svc.cluster.local`) only
through a namespaceSelector (an `ipBlock` matching pod or Service addresses depends on the CNI:
Cilium, for one, never matches in-cluster pods by CIDR), an address only through an `ipBlock` that
holds it outside its `except` ranges, an outside name (not resolved here) through an `ipBlock`.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tests.k8s import K8S, TARGETS, Doc, find, objects, one

NAMESPACE = "lotlens"
OVERLAYS = [t for t in TARGETS if t.startswith("overlays/")]
OPENAI_CALLERS = ("gateway", "vision-batcher", "translator")


@dataclass(frozen=True)
class Destination:
    """Where a service connects: a namespace's Service, an address, or an outside host name."""

    host: str
    port: int

    @property
    def namespace(self) -> str | None:
        """The namespace of an in-cluster Service name (a bare name is the pod's own)."""
        labels = self.host.split(".")
        if len(labels) == 1:
            return NAMESPACE
        if self.host.endswith((".svc.cluster.local", ".svc")):
            return labels[1]
        return None

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def destination(url: str) -> Destination:
    """The destination of a URL (or `host:port`), its port defaulted by scheme."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    assert parts.hostname, url
    return Destination(parts.hostname, parts.port or {"http": 80, "https": 443}[parts.scheme])


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects pods with these labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        present, value = expression["key"] in labels, labels.get(expression["key"])
        if not {"In": present and value in expression.get("values", []),
                "NotIn": value not in expression.get("values", []),
                "Exists": present, "DoesNotExist": not present}[expression["operator"]]:
            return False
    return True


def peer_admits(peer: Doc, to: Destination) -> bool:
    """Whether one `to` peer of an egress rule covers the destination (see the module's docstring)."""
    if "ipBlock" in peer:
        if to.namespace is not None:
            return False
        if to.address is None:
            return True
        block = peer["ipBlock"]
        excepted = any(to.address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
        return to.address in ipaddress.ip_network(block["cidr"]) and not excepted
    namespaces = peer.get("namespaceSelector")
    if to.namespace is None:
        return False
    if namespaces is None:
        return to.namespace == NAMESPACE
    return selects(namespaces, {"kubernetes.io/metadata.name": to.namespace})


def port_admits(rule: Doc, port: int) -> bool:
    """Whether an egress rule's ports (none: every port) hold this TCP port."""
    return "ports" not in rule or any(
        p.get("protocol", "TCP") == "TCP" and p["port"] <= port <= p.get("endPort", p["port"])
        for p in rule["ports"])


def may_reach(docs: list[Doc], service: str, to: Destination) -> bool:
    """Whether some egress rule of a policy selecting the service's pods admits the destination."""
    pod_labels = one(docs, "Deployment", f"lotlens-{service}")["spec"]["template"]["metadata"]["labels"]
    policies = [d["spec"] for d in find(docs, "NetworkPolicy") if "Egress" in d["spec"]["policyTypes"]]
    rules = [rule for policy in policies if selects(policy["podSelector"], pod_labels)
             for rule in policy.get("egress", [])]
    # A rule without `to` admits every destination.
    return any(port_admits(rule, to.port)
               and ("to" not in rule or any(peer_admits(peer, to) for peer in rule["to"])) for rule in rules)


def database_url(target: str, docs: list[Doc]) -> str:
    """DATABASE_URL as the target's Secret has it, or production's example of it."""
    secrets = find(docs, "Secret", "lotlens-secrets")
    if secrets:
        return base64.b64decode(secrets[0]["data"]["DATABASE_URL"]).decode()
    example = (K8S / target / "secret.example.env").read_text(encoding="utf-8")
    return next(line.split("=", 1)[1] for line in example.splitlines() if line.startswith("DATABASE_URL="))


@pytest.mark.parametrize("target", OVERLAYS)
def test_every_service_may_reach_kafka_and_postgresql_where_the_overlay_puts_them(target: str) -> None:
    # The local overlay's Kafka and PostgreSQL are Services in `lotlens-dev`, which only the base's
    # 0.0.0.0/0 ipBlock admitted: on Cilium every connection to them was dropped.
    docs = objects(target)
    brokers = one(docs, "ConfigMap", "lotlens-config")["data"]["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    wanted = [*map(destination, brokers), destination(database_url(target, docs))]
    for deployment in find(docs, "Deployment"):
        service = deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        for to in wanted:
            assert may_reach(docs, service, to), (target, service, to)


@pytest.mark.parametrize("target", TARGETS)
def test_the_services_that_call_openai_may_reach_openai_base_url(target: str) -> None:
    # The local overlay points at the stand-in in `lotlens-dev` on 18080, which only public
    # addresses on 80/443 were allowed: every model call timed out on a cluster enforcing policies.
    docs = objects(target)
    to = destination(one(docs, "ConfigMap", "lotlens-config")["data"]["OPENAI_BASE_URL"])
    for service in OPENAI_CALLERS:
        assert may_reach(docs, service, to), (service, to)


def test_a_peer_is_judged_by_what_it_lists_not_only_by_the_port() -> None:
    # The checks above once passed for any ipBlock peer on the right port.
    docs = objects("overlays/production")
    assert may_reach(docs, "gateway", Destination("api.openai.com", 443))
    assert may_reach(docs, "gateway", Destination("93.184.215.14", 443))
    for private in ("10.1.2.3", "169.254.169.254", "100.64.0.1"):
        assert not may_reach(docs, "gateway", Destination(private, 443)), private
    assert not may_reach(docs, "result-store", Destination("api.openai.com", 443))
    assert not may_reach(docs, "gateway", Destination("openai-standin.lotlens-dev.svc.cluster.local", 443))
    assert may_reach(docs, "gateway", Destination("10.20.16.9", 5432))
    assert not may_reach(docs, "gateway", Destination("10.20.17.9", 5432))
    assert not may_reach(docs, "gateway", Destination("kafka.lotlens-dev.svc.cluster.local", 9092))


@pytest.mark.parametrize("target", TARGETS)
def test_images_and_webhooks_go_out_on_80_and_443_over_ipv4_only_as_the_readme_says(target: str) -> None:
    # The SSRF guard takes any port and IPv6; the policies do not, on purpose (README, "Ports and
    # IPv6 under the Kubernetes manifests"): a change to either side is a change to that text.
    docs = objects(target)
    public_v4, public_v6 = "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
    for service in ("gateway", "vision-batcher", "webhook-dispatcher"):
        assert may_reach(docs, service, Destination(public_v4, 443)), service
        assert may_reach(docs, service, Destination(public_v4, 80)), service
        assert not may_reach(docs, service, Destination(public_v4, 8443)), service
        assert not may_reach(docs, service, Destination(public_v6, 443)), service
    readme = " ".join((K8S.parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert "on **80 and 443 only, over IPv4 only**" in readme
