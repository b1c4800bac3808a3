"""OpenAI's documented limits, as the stage applies them."""

from __future__ import annotations

import pytest

from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.core.image_tokens import max_image_tokens
from lotlens_common.stage.core.limits import (
    MAX_BYTES_PER_IMAGE,
    MAX_IMAGE_BYTES_PER_REQUEST,
    MAX_IMAGES_PER_REQUEST,
    check_metadata,
    default_token_limit,
    fit_request_images,
)
from lotlens_common.stage.record import batch_metadata


def test_batch_files_stay_under_200_decimal_megabytes_and_50000_requests() -> None:
    settings = StageSettings()
    assert settings.max_batch_bytes < 200_000_000 and settings.max_requests_per_batch == 50_000


def test_settings_past_openais_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        StageSettings(max_batch_bytes=208_666_624)  # 200 MiB: OpenAI's "200 MB" is decimal
    with pytest.raises(ValueError):
        StageSettings(max_requests_per_batch=50_001)


def test_work_rows_are_kept_longer_than_a_batch_may_still_deliver() -> None:
    # Pruned within a day, a cancelled job's lotless row was gone before its running batch's last
    # results arrived: they made a new, uncancelled row and were translated and paid for.
    with pytest.raises(ValueError):
        StageSettings(retention_h=24.0)
    assert StageSettings(retention_h=48.0).retention_h == 48.0


def test_a_batch_is_cancelled_just_after_openais_24_hour_window() -> None:
    assert 24 * 3600 < StageSettings().max_batch_age_s <= 25 * 3600


@pytest.mark.parametrize(("model", "detail", "tokens"), [
    ("o4-mini", "high", 2642), ("o4-mini", "low", 2642), ("gpt-4.1-mini", "auto", 2488),
    ("gpt-4.1-nano", "auto", 3779), ("gpt-4o", "low", 85), ("gpt-4o", "high", 85 + 170 * 8),
    ("gpt-4.1", "auto", 1445), ("o3", "high", 75 + 150 * 8), ("gpt-4o-mini", "low", 2833)])
def test_the_most_an_image_can_cost_per_model_family(model: str, detail: str, tokens: int) -> None:
    assert max_image_tokens(model, detail) == tokens


def test_the_enqueued_token_budget_is_on_by_default_and_conservative_per_model() -> None:
    assert StageSettings().enqueued_token_limit is None  # None: the model's default below
    assert default_token_limit("o4-mini") == 1_000_000
    assert default_token_limit("gpt-4.1-mini-2025-04-14") == 2_000_000
    assert default_token_limit("some-new-model") == 90_000
    assert StageSettings(enqueued_token_limit=0).enqueued_token_limit == 0  # explicitly none


def test_batch_metadata_stays_within_16_pairs_of_64_and_512_characters() -> None:
    assert len(batch_metadata("vision", "job-" + "x" * 400, "vision-" + "y" * 32, 3)) == 4
    with pytest.raises(ValueError, match="longer"):
        batch_metadata("vision", "j" * 513, "s", 1)
    with pytest.raises(ValueError, match="pairs"):
        check_metadata({f"k{i}": "v" for i in range(17)})


def test_a_request_carries_at_most_500_images_in_the_lots_order() -> None:
    urls = [f"https://img.test/{i}.jpg" for i in range(502)]
    kept, left_out = fit_request_images(urls, {url: 1000 for url in urls})
    assert MAX_IMAGES_PER_REQUEST == 500
    assert kept == urls[:500] and left_out == urls[500:]


def test_a_request_carries_at_most_50_decimal_megabytes_of_images() -> None:
    sizes = {"a": 10_000_000, "b": 10_000_000, "c": 10_000_000, "d": 10_000_000, "e": 9_999_999,
             "f": 2, "g": 1}
    kept, left_out = fit_request_images(list(sizes), sizes)
    assert MAX_IMAGE_BYTES_PER_REQUEST == 50_000_000
    # 49,999,999 bytes after e: f (2 bytes) would cross 50 MB, g (1 byte) still fits.
    assert kept == ["a", "b", "c", "d", "e", "g"] and left_out == ["f"]


def test_an_image_of_unknown_size_counts_as_the_most_one_image_may_weigh() -> None:
    # Counted as 0 bytes, any number of them went in one request, and OpenAI refuses a request
    # past 50 MB of images: the lot's line failed for good.
    urls = ["known", "unknown-1", "zero", "unknown-2"]
    kept, left_out = fit_request_images(urls, {"known": 9_000_000, "zero": 0})
    assert MAX_BYTES_PER_IMAGE == 20_000_000
    # 9 + 20 + 20 MB: a third image of unknown size would cross 50 MB.
    assert kept == ["known", "unknown-1", "zero"] and left_out == ["unknown-2"]


def test_an_image_past_20_mb_is_left_out_and_the_others_still_go() -> None:
    sizes = {"big": 20_000_001, "a": 10_000_000, "b": 20_000_000}
    kept, left_out = fit_request_images(list(sizes), sizes)
    assert kept == ["a", "b"] and left_out == ["big"]
