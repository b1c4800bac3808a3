"""The result-store's swap watch, the thread that announces the jobs a rebuild's swap finished,
ended by an error its rounds do not catch: the process's `/livez` says so, and the kubelet's
restart (whose start-up sweep announces those jobs) follows, instead of a silent end."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from lotlens_common.settings import TopicSettings
from tests.conftest import Infra, new_id
from tests.integration.admin_support import admin_env
from tests.integration.event_log.support import live_result_store
from tests.polling import wait_for
from tests.servers import free_port

pytestmark = pytest.mark.integration

# The service as deployed, but for the defect: once the file named by SWAP_WATCH_DEFECT exists,
# the watch's next look at the read models calls sys.exit, as a library deep in a call might.
_WITH_A_DEFECT = """
import os, pathlib, sys
from lotlens_result_store import __main__ as result_store, sweeps

looked = sweeps.read_models_in_place

def read_models_in_place(engine):
    if pathlib.Path(os.environ["SWAP_WATCH_DEFECT"]).exists():
        sys.exit("a defect in the swap watch")
    return looked(engine)

sweeps.read_models_in_place = read_models_in_place
result_store.main()
"""


@pytest.mark.usefixtures("own_engine")  # the database, migrated
def test_liveness_fails_once_the_swap_watch_has_died(own_database: str, topics: TopicSettings, infra: Infra,
                                                     tmp_path: Path) -> None:
    # The watch ran unsupervised: a SystemExit ended its thread without a word (not even a
    # traceback), the consumer went on, `/livez` said alive, and every job a later rebuild finished
    # stayed unannounced (no JobCompleted, no webhook) until something else restarted the process.
    defect, port = tmp_path / "defect", free_port()
    env = {**admin_env(infra.kafka_bootstrap, own_database, topics),
           "LOTLENS_GROUP_ID": new_id("result-store-"), "LOTLENS_METRICS_PORT": str(port),
           "LOTLENS_SWAP_CHECK_S": "0.1", "SWAP_WATCH_DEFECT": str(defect)}
    livez = f"http://127.0.0.1:{port}/livez"
    with live_result_store(env, tmp_path / "result-store.log", "-c", _WITH_A_DEFECT):
        assert httpx2.get(livez, timeout=5).status_code == 200
        defect.touch()
        wait_for(lambda: httpx2.get(livez, timeout=5).status_code == 503, timeout_s=30,
                 what="/livez to fail after the swap watch died")
        body = httpx2.get(livez, timeout=5).json()
    assert body["status"] == "stalled" and set(body["stale_loops"]) == {"swap-watch"}, body
