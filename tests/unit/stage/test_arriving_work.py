"""A lot arriving at a stage has its work written by orjson, not by the model: the bytes
must be the model's own JSON, whatever the text holds, and read back as the same work."""

from __future__ import annotations

import pytest

from lotlens_common.stage.work import (
    TranslationWork,
    VisionWork,
    arriving_translation_work,
    arriving_vision_work,
    read_work,
)

AWKWARD = ('tab\there, newline\nthere, CR\r, NUL-ish \x01\x1f\x7f, backslash \\N, quote " '
           '\u00e9\u6f22\U0001f697 \u2028')


@pytest.mark.parametrize(("info", "urls", "languages", "trace"), [
    ("", (), (), {}),
    ("2019 Toyota Camry, front collision", ("http://img.test/a.png", "http://img.test/b.png?sig=x&y=1"),
     ("en", "de", "zh-Hant"), {"traceparent": "00-ab-cd-01", "tracestate": "k=v"}),
    (AWKWARD, (f"http://img.test/{AWKWARD}.png",), ("en",), {"traceparent": AWKWARD}),
])
def test_arriving_work_is_the_model_s_json_and_reads_back(info: str, urls: tuple[str, ...],
                                                          languages: tuple[str, ...],
                                                          trace: dict[str, str]) -> None:
    model = VisionWork(additional_info=info, image_urls=urls, languages=languages, trace=trace)
    written = arriving_vision_work(info, urls, languages, trace)
    assert written == model.model_dump_json().encode()
    assert read_work(VisionWork, written.decode(), None) == model


@pytest.mark.parametrize(("html", "languages", "processed", "missing", "trace"), [
    ("", (), 0, (), {}),
    ("<p>Front bumper cracked.</p>", ("en", "de", "zh-Hant"), 3, ("http://img.test/b.png?sig=x&y=1",),
     {"traceparent": "00-ab-cd-01", "tracestate": "k=v"}),
    (f"<p>{AWKWARD}</p>", ("en",), 1, (f"http://img.test/{AWKWARD}.png",), {"traceparent": AWKWARD}),
])
def test_arriving_translation_work_is_the_model_s_json_and_reads_back(
        html: str, languages: tuple[str, ...], processed: int, missing: tuple[str, ...],
        trace: dict[str, str]) -> None:
    model = TranslationWork(english_html=html, languages=languages, processed_images=processed,
                            missing_images=missing, trace=trace)
    written = arriving_translation_work(html, languages, processed, missing, trace)
    assert written == model.model_dump_json().encode()
    assert read_work(TranslationWork, written.decode(), None) == model
