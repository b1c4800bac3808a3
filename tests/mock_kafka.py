"""Settings for an in-process librdkafka mock cluster (`test.mock.num.brokers`): a broker of its
own on 127.0.0.1 for each client, slow on demand, with no infrastructure to start."""

from __future__ import annotations

from typing import Any

from lotlens_common.settings import KafkaSettings


class MockKafkaSettings(KafkaSettings):
    """A client's own one-broker mock cluster answering every request after `rtt_ms`."""

    # Each request is answered this long after it was sent: acknowledgements come slowly.
    rtt_ms: int = 0
    # The most bytes of messages one produce request carries: with big messages, few a request.
    batch_bytes: int = 1_000_000
    # lz4's slowest level (12) keeps the client's broker thread busy compressing batches.
    compression_level: int = -1

    def client_config(self) -> dict[str, Any]:
        # bootstrap.servers is replaced by the mock cluster's own loopback address.
        return {**super().client_config(), "bootstrap.servers": "127.0.0.1:1",
                "test.mock.num.brokers": 1, "test.mock.broker.rtt": self.rtt_ms,
                "batch.size": self.batch_bytes, "compression.level": self.compression_level}
