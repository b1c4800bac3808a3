"""The stage's pause while OpenAI refuses its key (401/403 on an upload, a create or a listing).

A revoked or wrong key fails every call of every round: logged each time (with a traceback, per
shard and poll round) it buried the log, so the pause and its end are logged once each; every
refused call is still counted (`lotlens_openai_errors_total{kind="authentication"}`).
"""

from __future__ import annotations

import logging
from typing import Any

from lotlens_common.model.errors import ModelError
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.ports import KEY_REFUSED, Stage

log = logging.getLogger(__name__)

# The kinds of call a refusal paused on (the pause's entry starts with one).
LISTING = "listing"
SENDING = "sending"
_REFUSED_STATUSES = lifecycle.NOT_READABLE - {404}


def refused_key(exc: ModelError) -> bool:
    """Whether OpenAI refused the key itself (not one batch or file it cannot find)."""
    return getattr(exc, "status_code", None) in _REFUSED_STATUSES


def pause_for_key(stage: Stage[Any], exc: ModelError, refused: str) -> bool:
    """Pause the stage if `exc` refused the key on a call of the kind `refused` (`LISTING` or
    `SENDING`); logged when the pause begins. Whether it did."""
    if not refused_key(exc):
        return False
    if KEY_REFUSED not in stage.unreadable:
        log.error("OpenAI refused the key (%s): the %s stage submits nothing until a call with it "
                  "succeeds", exc, stage.spec.name)
    stage.unreadable[KEY_REFUSED] = f"{refused}: {exc}"
    return True


def key_refused(stage: Stage[Any]) -> bool:
    """Whether the stage is paused as OpenAI refuses this process's key: no row holds this pause,
    as the key is each process's own and only its own calls show it accepted again."""
    return KEY_REFUSED in stage.unreadable


def key_accepted(stage: Stage[Any], by: str = SENDING) -> None:
    """A call of the kind `by` succeeded with the key: end a pause (logged once) that a refusal of
    that kind began; a shard sent (`SENDING`) proves the key for every call. A listing proves only
    listings: OpenAI's restricted keys grant the Files and Batch endpoints apart, and a key that
    could list but not upload had its pause lifted by each minute's listing, claimed a new shard
    that stayed `building`, and logged the pause and its end again, minute after minute."""
    refused = stage.unreadable.get(KEY_REFUSED)
    if refused is None or (by != SENDING and not refused.startswith(f"{by}:")):
        return
    del stage.unreadable[KEY_REFUSED]
    log.warning("OpenAI accepts the key again: the %s stage submits again", stage.spec.name)
