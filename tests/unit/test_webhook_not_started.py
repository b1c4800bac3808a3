"""Whatever breaks before an attempt's POST becomes `NotStarted`, PostgreSQL's refusals told apart
from defects."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from lotlens_webhook_dispatcher.not_started import NotStarted, Unready, before_post


def test_a_database_refusal_before_the_post_is_not_started_for_the_database():
    refusal = OperationalError("SELECT 1\nFROM client_webhook_secrets", {}, Exception("server closed"))
    with pytest.raises(NotStarted) as broke, before_post("signing"):
        raise refusal
    assert broke.value.reason == "database" and broke.value.passes and broke.value.__cause__ is refusal
    assert str(broke.value).startswith("signing: OperationalError: ") and "\n" not in str(broke.value)


def test_a_defect_before_the_post_is_not_started_for_an_error():
    with pytest.raises(NotStarted) as broke, before_post("payload"):
        raise KeyError("lots")
    assert broke.value.reason == "error" and not broke.value.passes
    assert str(broke.value) == "payload: KeyError: 'lots'"


@pytest.mark.parametrize("reason", ["read_models", "no_key"])
def test_something_not_there_yet_before_the_post_is_not_started_for_its_own_reason_and_passes(reason):
    with pytest.raises(NotStarted) as broke, before_post("payload"):
        raise Unready(reason, "not there yet")
    assert broke.value.reason == reason and broke.value.passes
    assert str(broke.value) == "payload: Unready: not there yet"
