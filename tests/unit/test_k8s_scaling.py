"""What scales each consumer Deployment: its KEDA ScaledObject, as `kustomize build` renders the
base and each overlay, and each of them again with every topic renamed in the ConfigMap the way an
operator renames them (`LOTLENS_TOPIC_*`, read by lotlens_common.settings.TopicSettings).

The topic a trigger watches is compared with the topic the service consumes under the same
environment: its own settings class, given the ConfigMap the pods read, names it (the first of
its `subscribed_topics`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import pytest
import yaml

from lotlens_common.settings import TopicSettings
from lotlens_gateway.config import GatewaySettings
from lotlens_result_store.config import ResultStoreSettings
from lotlens_translator.config import TranslatorSettings
from lotlens_vision_batcher.config import VisionBatcherSettings
from lotlens_webhook_dispatcher.config import DispatcherSettings
from tests.k8s import K8S, TARGETS, Doc, objects, one

CONFIGMAP, SECRET = "lotlens-config", "lotlens-secrets"


T = TypeVar("T")


class Subscriber(Protocol):
    def subscribed_topics(self) -> list[str]: ...

    def model_dump(self) -> dict[str, Any]: ...


SETTINGS: dict[str, type[Subscriber]] = {
    "vision-batcher": VisionBatcherSettings, "translator": TranslatorSettings,
    "result-store": ResultStoreSettings, "webhook-dispatcher": DispatcherSettings}
TOPIC_NAMES = [name for name, field in TopicSettings.model_fields.items() if field.annotation is str]
Target = tuple[str, list[Doc]]


def renamed_topics(target: str, directory: Path) -> Path:
    """A kustomization over `target` that renames every topic in the ConfigMap, as an operator's
    overlay would."""
    ops = [{"op": "add", "path": f"/data/LOTLENS_TOPIC_{name.upper()}", "value": f"acme.{name}"}
           for name in TOPIC_NAMES]
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / target, directory)],
        "patches": [{"target": {"kind": "ConfigMap", "name": CONFIGMAP}, "patch": yaml.safe_dump(ops)}]}))
    return directory


@pytest.fixture(scope="module", params=[(name, renamed) for name in TARGETS for renamed in (False, True)],
                ids=lambda param: f"{param[0]}{' (topics renamed)' if param[1] else ''}")
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Target:
    name, renamed = request.param
    if not renamed:
        return name, objects(name)
    return f"{name} (topics renamed)", objects(renamed_topics(name, tmp_path_factory.mktemp("renamed")))


def pod_environment(docs: list[Doc], deployment: Doc) -> dict[str, str]:
    """The plain variables of the scaled container, as KEDA resolves a trigger's `…FromEnv`: its
    ConfigMaps (`envFrom`), then its literal `env` values (Secret references are not needed here)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({v["name"]: v["value"] for v in container.get("env", []) if "value" in v})
    return env


def pod_settings(settings_class: Callable[[], T], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> T:
    """A service's settings as its pod reads them (nothing of the test's own environment)."""
    for key in list(os.environ):
        if key.startswith(("LOTLENS_", "KAFKA_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings_class()


def service_settings(service: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Subscriber:
    return pod_settings(SETTINGS[service], env, monkeypatch)


def kafka_trigger(scaled: Doc) -> Doc:
    [trigger] = [t for t in scaled["spec"]["triggers"] if t["type"] == "kafka"]
    return cast(Doc, trigger)


def test_every_scaled_consumer_watches_the_lag_of_the_topic_it_consumes(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    # The translator's trigger named `lotlens.vision` while the topic names are settings: with the
    # topics renamed, its pods consumed `acme.vision` and KEDA watched a topic nobody wrote, so the
    # stage never scaled. Its group also reads the submissions, for cancellations only (it passes
    # every LotSubmitted over): summed over every topic, one big job's submissions scaled it to the
    # ceiling hours before a lot was described. The result-store acts on every topic its group
    # reads, so its lag is summed over all of them (no topic).
    name, docs = target
    for service in SETTINGS:
        scaled = one(docs, "ScaledObject", f"lotlens-{service}")
        deployment = one(docs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        env = pod_environment(docs, deployment)
        metadata = kafka_trigger(scaled)["metadata"]
        # KEDA's order: the trigger's own `topic`, else the scaled container's variable it names.
        watched = metadata.get("topic") or env.get(metadata.get("topicFromEnv", ""))
        settings = service_settings(service, env, monkeypatch)
        consumed = None if service == "result-store" else settings.subscribed_topics()[0]
        assert watched == consumed, (name, service, watched, consumed)
        if service != "result-store":
            assert consumed is not None and consumed.startswith("acme." if "renamed" in name else "lotlens.")


def test_every_topic_name_is_set_in_the_configmap_once(target: Target) -> None:
    # One place: the services and KEDA's triggers read these keys; an overlay changes them there.
    name, docs = target
    config = one(docs, "ConfigMap", CONFIGMAP)["data"]
    for topic in TOPIC_NAMES:
        assert f"LOTLENS_TOPIC_{topic.upper()}" in config, (name, topic)


def test_each_consumer_scales_on_its_own_group_up_to_the_partition_count(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    name, docs = target
    config = one(docs, "ConfigMap", CONFIGMAP)["data"]
    for service in SETTINGS:
        scaled = one(docs, "ScaledObject", f"lotlens-{service}")
        assert scaled["spec"]["scaleTargetRef"]["name"] == f"lotlens-{service}"
        assert scaled["spec"]["minReplicaCount"] == 1
        assert scaled["spec"]["maxReplicaCount"] == int(config["LOTLENS_TOPIC_PARTITIONS"]), (name, service)
        trigger = kafka_trigger(scaled)
        assert scaled["spec"]["triggers"][0] is trigger  # the production overlay's patch goes there
        metadata = trigger["metadata"]
        env = pod_environment(docs, one(docs, "Deployment", f"lotlens-{service}"))
        settings = service_settings(service, env, monkeypatch)
        fields = settings.model_dump()  # the dispatcher names its group `consumer_group`
        # The group the pods join: KAFKA_GROUP_PREFIX (set in the ConfigMap) goes in front of its id.
        group = fields["kafka"]["group_prefix"] + fields.get("consumer_group", fields.get("group_id"))
        assert metadata["consumerGroup"] == group, (name, service)
        assert metadata["bootstrapServersFromEnv"] == "KAFKA_BOOTSTRAP_SERVERS" in config
        assert "bootstrapServers" not in metadata
        if name.startswith("overlays/production"):
            assert (metadata["sasl"], metadata["tls"]) == ("scram_sha512", "enable")
            auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
            refs = auth["spec"]["secretTargetRef"]
            assert {r["parameter"]: r["key"] for r in refs} == {
                "username": "KAFKA_SASL_USERNAME", "password": "KAFKA_SASL_PASSWORD"}
            assert {r["name"] for r in refs} == {SECRET}
        else:
            assert "authenticationRef" not in trigger


def test_the_gateway_reads_each_consumers_lag_on_the_topics_it_subscribes_to(
        target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    # The gateway read each group's lag on its own copy of the services' subscriptions: a topic
    # a service came to read, missing from the copy, would lag unseen by the alerts.
    name, docs = target
    subscribed = {}
    for service in SETTINGS:
        env = pod_environment(docs, one(docs, "Deployment", f"lotlens-{service}"))
        settings = service_settings(service, env, monkeypatch)
        fields = settings.model_dump()  # the dispatcher names its group `consumer_group`
        subscribed[fields.get("consumer_group", fields.get("group_id"))] = tuple(settings.subscribed_topics())
    env = pod_environment(docs, one(docs, "Deployment", "lotlens-gateway"))
    clients = json.dumps({"acme": "k" * 32})  # a Secret's, which the manifests do not hold
    gateway = pod_settings(GatewaySettings, {**env, "LOTLENS_CLIENTS": clients}, monkeypatch)
    assert gateway.group_topics() == subscribed, name
