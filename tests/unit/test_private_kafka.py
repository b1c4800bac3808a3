"""The private brokers the outage and chaos tests start: their cluster ids."""

from __future__ import annotations

import base64

from tests.private_kafka import cluster_id


def test_a_cluster_id_is_a_kafka_uuid_that_never_reads_as_an_option() -> None:
    # StorageTool took an id starting with "-" for an option and refused to format: one broker in
    # 64 never started (seen as a chaos test failing with "run aborted"). 2,000 draws of the old
    # id would hold such an id all but certainly (1 - (63/64)**2000 > 1 - 1e-13).
    ids = [cluster_id() for _ in range(2000)]
    assert not [made for made in ids if made.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(made + "==")) == 16 for made in ids)
    assert len(set(ids)) == len(ids)
