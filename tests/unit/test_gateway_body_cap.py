"""The default body cap against the contract's 50,000 lots of the largest real size (README,
"Request limits"), and the job body timeout against the cap."""

from __future__ import annotations

import json

from pydantic import SecretStr

from bench.payload import AUCTION_PHOTOS, auction_lots
from lotlens_gateway.config import GatewaySettings

DEFAULTS = GatewaySettings(clients={"acme": SecretStr("acme-key-" + "0" * 32)})
# An uplink of 4 Mibit/s, a modest one for a server that sends 50,000 lots at once.
UPLINK_BYTES_PER_S = 4 * 1024 * 1024 // 8


def largest_body_bytes(lots: int) -> int:
    """The size of `lots` lots of the largest real size as `json.dumps` (with its spaces) sends them."""
    lot = auction_lots(1)[0]
    one = json.dumps({"signature": "sha256=" + "0" * 64, "version": "1.0.0",
                      "languages": ["en", "de", "fr"], "lots": [lot]})
    # Every lot id has 8 digits (70,000,000 on), so every lot is as long as the first.
    return len(one) + (lots - 1) * len(", " + json.dumps(lot))


def test_the_largest_real_lot_is_within_every_per_lot_limit() -> None:
    lot = auction_lots(1)[0]
    assert len(lot["images"]) == AUCTION_PHOTOS <= DEFAULTS.max_sync_images <= DEFAULTS.max_batch_images
    assert len(lot["additional_info"]) <= DEFAULTS.max_additional_info_chars
    assert len(json.dumps(lot)) <= DEFAULTS.max_lot_bytes


def test_the_default_cap_holds_the_contracts_50000_lots_of_the_largest_real_size() -> None:
    # 64 MiB refused 50,000 lots of 12 such photos (70 MB) with 413 PAYLOAD_TOO_LARGE.
    assert DEFAULTS.max_lots == 50_000
    assert largest_body_bytes(DEFAULTS.max_lots) <= DEFAULTS.max_body_bytes


def test_a_body_at_the_cap_arrives_within_the_body_timeout_over_a_modest_uplink() -> None:
    assert DEFAULTS.max_body_bytes / DEFAULTS.job_body_timeout_s <= UPLINK_BYTES_PER_S
