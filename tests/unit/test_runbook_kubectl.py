"""The runbook's commands run as written from any kubectl context: each names the namespace, and
the group states it tells on-call to look for are those the gateway's /health prints."""

from __future__ import annotations

import re

from confluent_kafka import ConsumerGroupState

from tests.conftest import ROOT

RUNBOOK = " ".join((ROOT / "docs" / "RUNBOOK.md").read_text(encoding="utf-8").split())


def test_every_kubectl_command_names_the_namespace() -> None:
    # `kubectl rollout undo deployment/lotlens-gateway` alone failed with NotFound from a context
    # whose namespace is another, mid-incident.
    commands = re.findall(r"`(kubectl [^`]*)`", RUNBOOK)
    assert len(commands) > 20
    assert [command for command in commands if not re.search(r" -n lotlens\b", command)] == []


def test_the_group_states_it_quotes_are_those_health_prints() -> None:
    # It said `preparingrebalance`; /health prints the state's name lowercased.
    printed = {state.name.lower() for state in ConsumerGroupState}
    quoted = re.findall(r"group's `state`, e\.g\. `([a-z_]+)`", RUNBOOK)
    assert quoted and set(quoted) <= printed, quoted
