"""What the consumer loop reads from a message's headers before its value: whether it is for this
group and handler at all, and the trace context it carries."""

from __future__ import annotations

from typing import cast

from confluent_kafka import Message

from lotlens_common import dead_letters, tracing
from lotlens_common.envelope import TYPE_HEADER, Envelope
from lotlens_common.producer import Headers


def carrier(message: Message, envelope: Envelope) -> dict[str, str]:
    """The trace context a message carries: its headers', else its envelope's (read only when tracing is
    on, so its `cast` stays: `wanted`, on every message, avoids the call)."""
    found = {str(name): found_text for name, value in cast(Headers, message.headers() or [])
             if name in tracing.TRACE_KEYS and (found_text := text(value)) is not None}
    return found if "traceparent" in found else envelope.trace


def wanted(message: Message, group: str, event_types: frozenset[str] | None) -> bool:
    """False for a replayed dead letter not addressed to this consumer group, and for an event
    whose `type` header names a type the handler does not act on. An event without a readable
    `type` header is read: its payload decides."""
    # A consumed message's headers are a list of pairs (the stub also allows a producer's dict).
    # Annotated, not `cast`: the call was 0.1 us of every message consumed.
    headers: Headers = message.headers() or []  # type: ignore[assignment]
    for name, value in headers:
        if name == TYPE_HEADER:
            if event_types is not None and (event_type := text(value)) is not None \
                    and event_type not in event_types:
                return False
        elif name == dead_letters.REPLAY_GROUP and text(value) != group:
            return False
    return True


def text(value: str | bytes | None) -> str | None:
    """A header's text; None when it is absent or not UTF-8 (a header must not stop the loop)."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return value
