"""A shard's advisory lock when its session dies under the builder (a PostgreSQL restart, or an
operator ending the backend): the builder learns it lost the lock, and leaving the lock's scope
neither hides that nor aborts the round with the dead connection's own error."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.submit import LostShardLock
from lotlens_common.stage.work import TranslationWork
from tests.conftest import new_id
from tests.integration.stage.helpers import end_session_holding


def test_a_builder_whose_lock_session_died_raises_lost_lock_and_the_lock_is_free(engine: Engine) -> None:
    store = PostgresWorkStore(engine, "translation", TranslationWork)
    shard_id = new_id("translation-")

    with pytest.raises(LostShardLock), store.exclusive(shard_id) as mine:
        assert mine and store.holds(shard_id)
        end_session_holding(engine, shard_id)
        assert not store.holds(shard_id)
        raise LostShardLock(shard_id)  # what `build` does when `holds` says no

    with store.exclusive(shard_id) as mine_again:
        assert mine_again, "the lock died with its session; the next builder or recovery takes it"


def test_a_lock_whose_session_died_is_left_quietly(engine: Engine) -> None:
    store = PostgresWorkStore(engine, "translation", TranslationWork)
    shard_id = new_id("translation-")

    with store.exclusive(shard_id) as mine:
        assert mine
        end_session_holding(engine, shard_id)

    assert not store.holds(shard_id)
