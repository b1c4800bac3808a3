"""`uuid5_text` is exactly the text of the standard library's `uuid.uuid5`: the event ids the
stages derive must not change with the way they are computed (a re-published event keeps its id)."""

from __future__ import annotations

import random
import uuid

from lotlens_common.uuids import uuid5_text

NAMESPACES = [uuid.UUID("6f1c9a52-3b7e-4d0a-9c41-2f8e5d7b1a60"), uuid.NAMESPACE_DNS, uuid.uuid4()]


def test_the_text_of_uuid5_for_every_kind_of_name() -> None:
    rng = random.Random(5)
    alphabet = "abcXYZ019-_\n:/ é中文🚗"
    names = ["", "VisionCompleted\njob\nshard-1\nlot-1"] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200))) for _ in range(3_000)]
    for namespace in NAMESPACES:
        for name in names:
            assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name)), (namespace, name)
