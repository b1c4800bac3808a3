"""The language names (0.9 s of CPU to load) are loaded when a service starts, not by its first
request or job: each check runs a fresh interpreter, so nothing is loaded beforehand."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LOADED = "print('language_data.name_data' in sys.modules)"

# Each service's main, stopped where it would start serving.
MAINS = {
    "translator": "import lotlens_translator.__main__ as m\n"
                  f"m.serve_stage = lambda *a, **k: {LOADED}\n"
                  "m.main()",
    "gateway": "import lotlens_gateway.__main__ as m\n"
               f"def stop(*a, **k):\n    {LOADED}\n    raise SystemExit(0)\n"
               "m.build_deps = stop\n"
               "m.main()",
}


def run(code: str) -> str:
    # The settings each main reads; nothing connects before the point where it is stopped.
    env = {**os.environ, "LOTLENS_CLIENTS": '{"client-a": "a-key-of-sixteen-chars-or-more"}'}
    done = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True,
                          timeout=60, check=True, env=env)
    return done.stdout.strip()


def test_importing_the_module_does_not_load_the_names() -> None:
    assert run("import lotlens_common.model.languages\n" + LOADED) == "False"


def test_preload_loads_the_names() -> None:
    assert run("from lotlens_common.model import languages\nlanguages.preload()\n" + LOADED) == "True"


@pytest.mark.parametrize("service", sorted(MAINS))
def test_each_service_that_checks_languages_loads_the_names_before_serving(service: str) -> None:
    assert run(MAINS[service]) == "True"
