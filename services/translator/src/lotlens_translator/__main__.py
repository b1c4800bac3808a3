"""`lotlens-translator`: wiring only."""

from __future__ import annotations

from lotlens_common.gc_tuning import STAGE_GC_THRESHOLDS, tune_gc
from lotlens_common.stopping import catch_stop_signals

# First, whatever the entry point (`python -m` or the console script, which imports this module):
# a SIGTERM during the start-up below stops it cleanly (stopping.py), and the collector's
# thresholds are the service's during the imports too (gc_tuning.py).
catch_stop_signals()
tune_gc(STAGE_GC_THRESHOLDS)

from functools import partial

from lotlens_common.model import languages
from lotlens_common.stage.service import serve_stage
from lotlens_translator.config import TranslatorSettings
from lotlens_translator.handlers import HANDLED, handle
from lotlens_translator.translation_stage import TranslationStage


def main() -> None:
    """Consume described lots and run the translation batches until SIGTERM."""
    settings = TranslatorSettings()
    languages.preload()
    serve_stage(settings, settings.stage, settings.group_id, settings.subscribed_topics(),
                TranslationStage(settings.topics.translation, settings.models,
                                 billed_share=settings.billed_share()),
                partial(handle, topic=settings.topics.translation), settings.metrics_port, HANDLED)


if __name__ == "__main__":
    main()
