"""A batch file LotLens is done with, deleted at OpenAI: after its batch was collected, or when
no batch is made of it. Apart from submit and collect, which both delete files, so that neither
imports the other."""

from __future__ import annotations

import logging
from typing import Any

from lotlens_common.model.errors import ModelError, ModelRequestError
from lotlens_common.stage import metrics
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.traced import openai_call

log = logging.getLogger(__name__)


async def forget_file(stage: Stage[Any], file_id: str) -> None:
    """Delete a file at OpenAI, or log why not (it goes after 30 days anyway)."""
    try:
        with openai_call("files.delete"):
            await stage.batches.delete_file(file_id)
    except ModelError as exc:
        if isinstance(exc, ModelRequestError) and exc.status_code == 404:
            # Already gone (deleted in the dashboard, or past its 30 days): what was asked.
            log.info("file %s was deleted already: %s", file_id, exc)
            return
        metrics.openai_error(stage.spec.name, "files", exc)
        log.warning("could not delete the file %s: %s", file_id, exc)
