"""`lotlens-vision-batcher`: wiring only."""

from __future__ import annotations

from lotlens_common.gc_tuning import STAGE_GC_THRESHOLDS, tune_gc
from lotlens_common.stopping import catch_stop_signals

# First, whatever the entry point (`python -m` or the console script, which imports this module):
# a SIGTERM during the start-up below stops it cleanly (stopping.py), and the collector's
# thresholds are the service's during the imports too (gc_tuning.py).
catch_stop_signals()
tune_gc(STAGE_GC_THRESHOLDS)

from lotlens_common import lookups
from lotlens_common.stage.service import serve_stage
from lotlens_vision_batcher.config import VisionBatcherSettings
from lotlens_vision_batcher.handlers import HANDLED, handle
from lotlens_vision_batcher.vision_stage import VisionStage, image_checker


def main() -> None:
    """Consume submitted lots and run the vision batches until SIGTERM."""
    settings = VisionBatcherSettings()
    lookups.configure(settings.dns_lookup_threads, settings.dns_lookups_per_client)
    serve_stage(settings, settings.stage, settings.group_id, settings.subscribed_topics(),
                VisionStage(settings.topics.vision, settings.models, image_checker(settings),
                            billed_share=settings.billed_share(),
                            check_budget_s=settings.image_check_budget_s), handle,
                settings.metrics_port, HANDLED)


if __name__ == "__main__":
    main()
