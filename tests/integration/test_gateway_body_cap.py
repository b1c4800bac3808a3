"""The body cap against the contract's 50,000 lots, through a real gateway.

50,000 lots of the largest real size (134 MB) took 30 s here; the same lots at the same bytes a lot
of the cap take a fiftieth of that (the default's arithmetic: tests/unit/test_gateway_body_cap.py).
"""

from __future__ import annotations

import json

import httpx2
import pytest
from sqlalchemy import Engine

from bench.payload import auction_lots
from lotlens_common.settings import ServiceSettings
from lotlens_gateway.config import GatewaySettings
from tests.integration.gateway_support import running_gateway

pytestmark = pytest.mark.integration

DEFAULT_CAP: int = GatewaySettings.model_fields["max_body_bytes"].default
DEFAULT_MAX_LOTS: int = GatewaySettings.model_fields["max_lots"].default
LOTS = 1_000


def test_lots_of_the_largest_real_size_are_accepted_at_the_default_caps_bytes_a_lot(
        settings: ServiceSettings, engine: Engine) -> None:
    # At 64 MiB, 50,000 of them were 413 PAYLOAD_TOO_LARGE (content_length 133800151).
    cap = DEFAULT_CAP * LOTS // DEFAULT_MAX_LOTS
    with running_gateway(settings, engine, max_lots=LOTS, max_body_bytes=cap) as gateway:
        lots = auction_lots(LOTS)
        payload = json.dumps({"signature": gateway.lots_signature(lots), "version": "1.0.0",
                              "languages": ["en", "de", "fr"], "lots": lots}).encode()
        assert len(payload) > cap * 0.85  # near the cap, not far under it
        response = httpx2.post(f"{gateway.url}/api/v1/generate-descriptions", content=payload, timeout=60)
        assert response.status_code == 201, response.text
        assert response.json()["total_lots"] == LOTS
