"""Write the English names of language, script and region subtags that LotLens uses
(libs/common/.../model/language_names_en.json) from the pinned `language-data` package.

Run after changing the `language-data` pin: `.venv/bin/python scripts/language_names.py`.
`tests/unit/test_language_names.py` fails while the table and the package disagree.
"""

from __future__ import annotations

from pathlib import Path

import orjson

TABLE = Path(__file__).resolve().parents[1] / "libs/common/src/lotlens_common/model/language_names_en.json"


def english_names() -> dict[str, str]:
    """Every subtag's English name as `language-data` has it (its other 100+ languages left out)."""
    from language_data.name_data import CODE_TO_NAMES

    return {code: names["en"] for code, names in sorted(CODE_TO_NAMES.items()) if "en" in names}


if __name__ == "__main__":
    TABLE.write_bytes(orjson.dumps(english_names(), option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {TABLE}")
