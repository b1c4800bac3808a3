"""The production overlay's Ingress (ingress-nginx) lets through every request the contract allows,
for as long as the gateway may take to answer it, tied to the gateway's settings as production
configures them (its ConfigMap), so the two cannot drift apart.

ingress-nginx's defaults broke the contract: a job body over 1 MiB got nginx's HTML 413, a
synchronous lot taking over 60 s nginx's 504 while the gateway went on (and paid OpenAI), and the
client's retry paid again; its upstream connections, idle for up to 60 s, outlived the gateway's
5 s keep-alive, and a POST sent on one the gateway had just closed was a 502.
"""

from __future__ import annotations

import os
import re

import pytest
from pydantic import SecretStr

from lotlens_gateway.config import LOT_ANSWER_S, GatewaySettings
from tests.k8s import Doc, find, objects, one

PRODUCTION = "overlays/production"
PREFIX = "nginx.ingress.kubernetes.io/"
# How much longer than the gateway's own deadline nginx waits: the answer's last bytes, a GC pause.
MARGIN_S = 10
# The longest a connection idles at the common front proxies before they close it: ingress-nginx's
# `upstream-keepalive-timeout` (60 s), AWS ALB's idle timeout (60 s). The gateway must idle longer,
# or the proxy sends a request on a connection the gateway is closing.
PROXY_IDLE_S = 60
_NGINX_SIZE = re.compile(r"(\d+)([kKmMgG]?)")


def nginx_bytes(size: str) -> int:
    """An nginx size (`client_max_body_size` syntax: 8k, 160m, 1g) in bytes."""
    match = _NGINX_SIZE.fullmatch(size)
    assert match, size
    power = " kmg".index(match.group(2).lower() or " ")
    return int(match.group(1)) << (10 * power)


@pytest.fixture(scope="module")
def production() -> list[Doc]:
    return objects(PRODUCTION)


@pytest.fixture
def gateway_settings(production: list[Doc], monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    """The gateway's settings as production's ConfigMap makes them (the Secret's keys aside)."""
    for name in [name for name in os.environ if name.startswith("LOTLENS_")]:
        monkeypatch.delenv(name)
    for name, value in one(production, "ConfigMap", "lotlens-config")["data"].items():
        monkeypatch.setenv(name, value)
    return GatewaySettings(clients={"acme": SecretStr("acme-key-" + "0" * 32)})


def the_ingress(production: list[Doc]) -> Doc:
    ingresses = find(production, "Ingress")
    assert len(ingresses) == 1, f"production has {len(ingresses)} Ingress objects, not one"
    return ingresses[0]


def test_the_ingress_routes_to_the_gateway_service_from_the_namespace_its_policy_admits(
        production: list[Doc]) -> None:
    ingress = the_ingress(production)["spec"]
    assert ingress["ingressClassName"] == "nginx"
    service = one(production, "Service", "lotlens-gateway")["spec"]
    backends = [path["backend"]["service"] for rule in ingress["rules"] for path in rule["http"]["paths"]]
    assert backends and all(b["name"] == "lotlens-gateway" for b in backends), backends
    assert all(b["port"].get("name") in {p["name"] for p in service["ports"]} for b in backends), backends
    admitted = one(production, "NetworkPolicy", "lotlens-gateway-ingress")["spec"]["ingress"][0]["from"]
    controller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    assert controller in admitted


def test_a_job_body_up_to_the_gateways_cap_reaches_the_gateway(
        production: list[Doc], gateway_settings: GatewaySettings) -> None:
    # Past the cap, the gateway's own 413 (the contract's error body) answers, refused from its
    # Content-Length before a byte of it is read.
    annotations = the_ingress(production)["metadata"]["annotations"]
    assert nginx_bytes(annotations[PREFIX + "proxy-body-size"]) > gateway_settings.max_body_bytes, annotations
    # Streamed, not spooled to the controller's disk first: the gateway's intake admission (its
    # 503 INTAKE_BUSY, strikes, 408 for a slow body) sees the client's own pace.
    assert annotations[PREFIX + "proxy-request-buffering"] == "off"


def test_nginx_waits_for_a_synchronous_lot_as_long_as_the_gateway_may_take(
        production: list[Doc], gateway_settings: GatewaySettings) -> None:
    annotations = the_ingress(production)["metadata"]["annotations"]
    longest_answer_s = gateway_settings.sync_timeout_s + LOT_ANSWER_S
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[PREFIX + timeout]) >= longest_answer_s + MARGIN_S, (timeout, longest_answer_s)


def test_the_gateway_keeps_an_idle_connection_longer_than_a_front_proxy(
        gateway_settings: GatewaySettings) -> None:
    assert gateway_settings.keep_alive_timeout_s > PROXY_IDLE_S
