"""The dead-letter topic's record format, shared by the consumer loop that writes it and the
`lotlens-admin dlq` tool that lists and replays it.

Each consuming group dead-letters its own copy of a message it cannot handle (groups fail
independently: one may read a version another cannot), so a record names its group, and a
replay is addressed to that group alone with `REPLAY_GROUP`; the other groups skip it.
"""

from __future__ import annotations

# Headers of a dead-letter record (next to the original message's own headers).
ERROR = "dlq.error"
REASON = "dlq.reason"
GROUP = "dlq.group"
SOURCE_TOPIC = "dlq.topic"
SOURCE_PARTITION = "dlq.partition"
SOURCE_OFFSET = "dlq.offset"
# On a record the tool writes to the dead-letter topic after a replay: "<partition>:<offset>" of
# the record it replayed (makes replays idempotent).
REPLAYED = "dlq.replayed"
# The same for a dead letter an operator gave up on (`dlq discard`), with the reason in `NOTE`.
DISCARDED = "dlq.discarded"
NOTE = "dlq.note"
# On a replayed message in its source topic: the only consumer group that handles it.
REPLAY_GROUP = "lotlens.replay.group"
DLQ_HEADERS = (ERROR, REASON, GROUP, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, REPLAY_GROUP)

# Why a message was dead-lettered.
UNDECODABLE = "undecodable"
FUTURE_VERSION = "future-version"
HANDLER_FAILED = "handler-failed"
REASONS = (UNDECODABLE, FUTURE_VERSION, HANDLER_FAILED)
