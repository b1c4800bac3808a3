"""What each service sets up before it serves, checked in a fresh interpreter per service with
its real `main`, stopped where it would first connect (nothing is loaded or set beforehand)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import pytest

from lotlens_common.gc_tuning import GC_THRESHOLDS, STAGE_GC_THRESHOLDS

# Prints what the checks read, then stops the main.
REPORT = """
def report(*_args, **_kwargs):
    import gc, json, sys
    from lotlens_common.model import languages
    print(json.dumps({"names": languages.canonical_tag.cache_info().currsize > 0,
                      "every_language_names": "language_data.name_data" in sys.modules,
                      "rss_mb": int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20,
                      "gc": gc.get_threshold(),
                      "collections": sum(generation["collections"] for generation in gc.get_stats())}))
    raise SystemExit(0)
"""

# Each service's main, with the first function that would connect replaced by `report`.
MAINS = {
    "gateway": ("lotlens_gateway.__main__", "lotlens_gateway.__main__", "build_deps"),
    "vision-batcher": ("lotlens_vision_batcher.__main__", "lotlens_common.stage.service", "make_engine"),
    "translator": ("lotlens_translator.__main__", "lotlens_common.stage.service", "make_engine"),
    "result-store": ("lotlens_result_store.__main__", "lotlens_result_store.__main__", "make_engine"),
    "webhook-dispatcher": ("lotlens_webhook_dispatcher.__main__", "lotlens_webhook_dispatcher.__main__",
                           "make_engine"),
}
# The services that check or name languages: the gateway at intake, the translator per lot.
LANGUAGE_SERVICES = {"gateway", "translator"}
STAGES = {"vision-batcher", "translator"}


# One fresh interpreter per service serves all its checks (each start is 1.5-3 s).
@functools.cache
def start(service: str) -> dict[str, object]:
    main, patched, name = MAINS[service]
    # The main first, as `python -m` imports it: what it sets on import comes before the rest.
    code = (f"{REPORT}\nimport importlib\nservice = importlib.import_module({main!r})\n"
            f"importlib.import_module({patched!r}).{name} = report\nservice.main()")
    # The settings the mains require; nothing connects before the point where they stop.
    env = {**os.environ, "LOTLENS_CLIENTS": '{"client-a": "a-key-of-thirty-two-characters-or-more"}'}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=True, env=env)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("service", sorted(MAINS))
def test_each_service_collects_young_objects_every_50000_allocations_a_stage_every_million(
        service: str) -> None:
    # A 50,000-lot job is millions of short-lived objects: at the default threshold (700) the
    # collector walked them over and over, about 6% of the stages' CPU; a stage holds a whole
    # shard's (tests/unit/stage/test_shard_collections.py).
    expected = STAGE_GC_THRESHOLDS if service in STAGES else GC_THRESHOLDS
    assert tuple(start(service)["gc"]) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("service", sorted(MAINS))
def test_each_service_tunes_the_collector_before_its_imports_not_after(service: str) -> None:
    # Importing a service allocates about a million objects that all live on (the SDK's and the
    # schemas' classes): at the default threshold the collector walked them 150-400 times, 10-15%
    # of the CPU a start takes, with six processes starting on two cores at once.
    assert start(service)["collections"] < 40, start(service)  # type: ignore[operator]


@pytest.mark.parametrize("service", sorted(LANGUAGE_SERVICES))
def test_the_language_names_are_loaded_before_serving_not_by_the_first_request(service: str) -> None:
    # The tag registry and the names load on first use; that fell on the translator's first job
    # and the gateway's first submission.
    assert start(service)["names"] is True


@pytest.mark.parametrize("service", sorted(LANGUAGE_SERVICES))
def test_naming_languages_in_english_does_not_load_every_language_s_names(service: str) -> None:
    # langcodes' display_name loads language-data's names in every language: about 270 MB of
    # RSS per process (gateway idle 380 MB instead of about 115 MB), to read the English column.
    started = start(service)
    assert started["every_language_names"] is False
    assert started["rss_mb"] < 200, started  # type: ignore[operator]


def test_importing_the_languages_module_loads_no_names_and_preload_does() -> None:
    check = "print(languages._names.cache_info().currsize)"
    assert subprocess.run([sys.executable, "-c", f"from lotlens_common.model import languages\n{check}"],
                          capture_output=True, text=True, timeout=60, check=True).stdout.strip() == "0"
    assert subprocess.run([sys.executable, "-c", "from lotlens_common.model import languages\n"
                           f"languages.preload()\n{check}"],
                          capture_output=True, text=True, timeout=60, check=True).stdout.strip() == "1"
