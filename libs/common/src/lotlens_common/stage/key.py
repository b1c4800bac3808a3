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
from lotlens_common.stage.ports import Stage

log = logging.getLogger(__name__)

# The `Stage.unreadable` entry while OpenAI refuses our key.
KEY_REFUSED = "the key is refused"
_REFUSED_STATUSES = lifecycle.NOT_READABLE - {404}


def refused_key(exc: ModelError) -> bool:
    """Whether OpenAI refused the key itself (not one batch or file it cannot find)."""
    return getattr(exc, "status_code", None) in _REFUSED_STATUSES


def pause_for_key(stage: Stage[Any], exc: ModelError) -> bool:
    """Pause the stage if `exc` refused the key (logged when the pause begins); whether it did."""
    if not refused_key(exc):
        return False
    if KEY_REFUSED not in stage.unreadable:
        log.error("OpenAI refused the key (%s): the %s stage submits nothing until a call with it "
                  "succeeds", exc, stage.spec.name)
    stage.unreadable[KEY_REFUSED] = str(exc)
    return True


def key_accepted(stage: Stage[Any]) -> None:
    """A call with the key succeeded: end the pause (logged once) if there was one."""
    if stage.unreadable.pop(KEY_REFUSED, None) is not None:
        log.warning("OpenAI accepts the key again: the %s stage submits again", stage.spec.name)
