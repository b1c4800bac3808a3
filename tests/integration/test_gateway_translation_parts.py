"""A long description into many languages, synchronous mode, through a real gateway and the
stand-in: more text than the translation model may write in one answer (gpt-4.1-mini: 32,768
output tokens) is asked for in several requests, a part of the languages each."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import running_gateway
from tests.integration.sync_support import model_calls, one_lot
from tests.standin import Standin

pytestmark = pytest.mark.integration

# The stand-in's English is the seller's notes, HTML-escaped, then a description's paragraphs and
# list (1.1-1.3 kB): these 8,650 characters make about 15,400 (3,900 tokens, under the vision
# answer's 4,000), as long as the English o4-mini writes at most, and nine languages of it are
# about 34,000 tokens.
CLAUSE = "Panels <A> & <B> scuffed, dents <5 cm> & <10 cm>; "
NOTES = (CLAUSE * (8_650 // len(CLAUSE) + 1))[:8_650]
NINE = ["de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da"]


def test_a_long_description_into_nine_languages_completes_with_every_language(
        settings: ServiceSettings, engine: Engine, standin: Standin, images: str) -> None:
    with running_gateway(settings, engine, model_url=standin.base_url) as gateway:
        response = gateway.submit(one_lot(images, NOTES, names=("front.png",)), languages=["en", *NINE])
    assert response.status_code == 200, response.text
    lot = response.json()["lots"][0]
    assert lot["status"] == "completed", lot.get("error_message")
    english = lot["descriptions"][0]["damages"]
    assert len(english) > 15_000
    assert [d["language"] for d in lot["descriptions"]] == ["en", *NINE]
    for description in lot["descriptions"][1:]:
        code = description["language"]
        assert description["damages"].startswith(f"<p>[{code}] Standin vision: 1 image(s) reviewed.")
    assert model_calls(standin) == 4  # vision, then three parts of three languages
    # Every answer's tokens are counted: the parts together wrote all nine languages.
    assert lot["usage"]["output_tokens"] > 9 * len(english) // 4
