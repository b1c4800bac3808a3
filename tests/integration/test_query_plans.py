"""Hot statements at volume, held to PostgreSQL's planner: their cost follows the rows they
return, not the size of the tables (found by EXPLAIN at 3 million lots and 20,000 jobs)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from lotlens_common.clock import utc_now
from lotlens_common.read_models import get_job, iter_lot_results, lot_page, lot_results_in_chunks
from lotlens_gateway.outbox import cancelled_unprojected, recorded_in_window
from lotlens_webhook_dispatcher.claims import Room, claim
from tests.conftest import Infra, own_schema
from tests.integration.plan_support import Node, executed, plan_nodes, plans

pytestmark = pytest.mark.integration

def test_the_jobs_list_finds_a_clients_unprojected_cancels_without_reading_every_job(
        infra: Infra, engine: Engine) -> None:
    # Per GET /batch-jobs: the old statement scanned the whole jobs table for unfinished ones.
    with own_schema(infra, engine) as own, own.begin() as conn:
        conn.execute(text("INSERT INTO jobs (job_id, client_id, status, total_lots, created_at) "
                          "SELECT 'job-' || n, 'client-' || (n % 50), 'completed', 10, now() "
                          "FROM generate_series(1, 20000) n"))
        conn.execute(text("INSERT INTO outbox (topic, job_id, client_id, event_type, payload, published_at) "
                          "SELECT 't', 'job-' || n, 'client-' || (n % 50), CASE WHEN n % 1000 = 0 "
                          "THEN 'JobCancelled' ELSE 'LotSubmitted' END, '{}', now() "
                          "FROM generate_series(1, 60000) n"))
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("ANALYZE outbox"))
        nodes = plan_nodes(conn, lambda: cancelled_unprojected(conn, "client-0"))
    assert ("Seq Scan", "jobs") not in nodes, nodes
    assert ("Seq Scan", "outbox") not in nodes, nodes


def test_a_clients_recent_redeliveries_are_counted_without_reading_its_other_events(
        infra: Infra, engine: Engine) -> None:
    # Per redelivery request: the client's events of the hour (its lots among them) were read to
    # find the few redelivery requests.
    with own_schema(infra, engine) as own, own.begin() as conn:
        conn.execute(text("INSERT INTO outbox (topic, job_id, client_id, event_type, payload, created_at) "
                          "SELECT 't', 'job-' || n / 1000, 'client-' || (n % 5), CASE WHEN n % 10000 = 0 "
                          "THEN 'WebhookRedeliveryRequested' ELSE 'LotSubmitted' END, '{}', "
                          "now() - n * interval '10 ms' FROM generate_series(1, 300000) n"))
        conn.execute(text("ANALYZE outbox"))
        counted: list[tuple[int, float]] = []
        statements = executed(conn, lambda: counted.append(recorded_in_window(
            conn, "client_id", "client-0", "WebhookRedeliveryRequested", 600)))
        [plan] = plans(conn, [s for s in statements if "FROM outbox" in s[0]])
    assert counted[0][0] == 5  # n = 10,000 ... 50,000: 100 to 500 s ago
    indexes = {index for _, relation, index in plan if relation == "outbox"}
    assert indexes == {"ix_outbox_client_redeliveries"}, plan
    assert ("Seq Scan", "outbox", None) not in plan, plan


# A big job among many small ones, its lots interleaved with theirs as concurrent jobs' are: few
# lots anywhere have a position (`seq`) past 50, and the big job's 500 webhook URLs have 20 lots each.
BIG_JOB, BIG_JOB_LOTS, SMALL_JOBS, SMALL_JOB_LOTS, URLS = "job-big", 10_000, 2_000, 50, 500


_JOBS_AND_LOTS = """
INSERT INTO jobs (job_id, client_id, status, total_lots, languages, created_at)
VALUES (:big, 'client', 'completed', :big_lots, '["en"]', now());
INSERT INTO lots (job_id, lot_id, seq, status, webhook)
SELECT job_id, lot_id, seq, 'completed', webhook FROM (
    SELECT 'job-' || n % :jobs AS job_id, 'lot-' || n AS lot_id, n / :jobs AS seq, NULL AS webhook
    FROM generate_series(0, :small_lots - 1) n
    UNION ALL
    SELECT :big, 'big-' || lpad(CAST(n AS text), 5, '0'), n,
           'https://hooks.example.com/customer/' || n % :urls || '?token=t' || n % :urls
    FROM generate_series(0, :big_lots - 1) n
) s ORDER BY md5(lot_id);
ALTER TABLE lots ALTER COLUMN job_id SET STATISTICS 10000, ALTER COLUMN seq SET STATISTICS 10000,
    ALTER COLUMN lot_id SET STATISTICS 10000;
ANALYZE jobs;
ANALYZE lots;
"""
# ANALYZE samples 300 rows per unit of a column's statistics target: at the default (100) it read
# 30,000 of the 110,000 lots, a new sample each run, and one sample in a full run estimated the big
# job's remaining lots low enough for a bitmap scan and a sort. Read whole, the plans are the same
# every run; how the planner estimates them is what the tests hold.


def hook(n: int) -> str:
    return f"https://hooks.example.com/customer/{n}?token=t{n}"


@pytest.fixture(scope="module")
def lots_at_volume(infra: Infra, engine: Engine) -> Iterator[Engine]:
    """110,000 lots, analysed."""
    with own_schema(infra, engine) as own:
        with own.begin() as conn:
            conn.execute(text(_JOBS_AND_LOTS), {"big": BIG_JOB, "big_lots": BIG_JOB_LOTS, "jobs": SMALL_JOBS,
                                                "small_lots": SMALL_JOBS * SMALL_JOB_LOTS, "urls": URLS})
        yield own


def lots_scans(plan: list[Node]) -> list[Node]:
    return [node for node in plan if node[1] == "lots"]


def test_the_results_download_reads_each_chunk_down_the_index_without_sorting_the_job(
        lots_at_volume: Engine) -> None:
    # Each chunk of 1,000 sorted all the job's remaining lots: 4.5-6.2 s for 50,000 lots. With
    # the index and constant bounds, the planner still took the lots past a position for few (few
    # lots anywhere are that far into a job) and sorted them for most chunks.
    with lots_at_volume.connect() as conn:
        job = get_job(conn, BIG_JOB)
    assert job is not None
    read: list[str] = []
    statements = executed(lots_at_volume, lambda: read.extend(lot["lot_id"] for lot in
                                                              lot_results_in_chunks(lots_at_volume, job)))
    assert read == [f"big-{n:05}" for n in range(BIG_JOB_LOTS)]
    chunks = [statement for statement in statements if "FROM lots" in statement[0]]
    # Per 1,000 lots, their sizes; then the lots of each chunk (1,000 short ones fit in one).
    sizes = [statement for statement in chunks if "octet_length" in statement[0]]
    assert len(sizes) == BIG_JOB_LOTS // 1000 + 1 and len(chunks) == 2 * len(sizes) - 1
    with lots_at_volume.connect() as conn:
        for number, plan in enumerate(plans(conn, chunks), 1):
            assert lots_scans(plan) == [("Index Scan", "lots", "ix_lots_request_order")], (number, plan)
            assert "Sort" not in [node for node, _, _ in plan], (number, plan)


def test_a_page_of_a_jobs_lots_is_read_down_the_index_without_sorting_the_job(lots_at_volume: Engine) -> None:
    # Page 1 of a 50,000-lot job's lots sorted all of them: 24.6 ms, 0.11 ms down the index.
    with lots_at_volume.connect() as conn:
        job = get_job(conn, BIG_JOB)
        assert job is not None
        page: list[dict[str, Any]] = []
        statements = executed(conn, lambda: page.extend(lot_page(conn, job, None, 100, 0, 1024 * 1024)[0]))
        assert [lot["lot_id"] for lot in page] == [f"big-{n:05}" for n in range(100)]
        [sizes_plan, page_plan, count_plan] = plans(conn, [s for s in statements if "FROM lots" in s[0]])
    for plan in (sizes_plan, page_plan):
        assert lots_scans(plan) == [("Index Scan", "lots", "ix_lots_request_order")], plan
        assert "Sort" not in [node for node, _, _ in plan], plan
    assert ("Seq Scan", "lots", None) not in count_plan, count_plan


def test_the_dispatcher_reads_one_webhook_urls_lots_without_reading_the_rest_of_the_job(
        lots_at_volume: Engine) -> None:
    # A job past the dispatcher's cache (20,000 lots) is read per URL at each attempt: all the
    # job's lots were read to keep the URL's (25 ms an attempt).
    url = hook(17)
    with lots_at_volume.begin() as conn:
        job = get_job(conn, BIG_JOB)
        assert job is not None
        lots: list[dict[str, Any]] = []
        statements = executed(conn, lambda: lots.extend(iter_lot_results(conn, job, webhook_url=url)))
        assert [lot["lot_id"] for lot in lots] == [f"big-{n:05}" for n in range(17, BIG_JOB_LOTS, URLS)]
        [plan] = plans(conn, [s for s in statements if "FROM lots" in s[0]])
    # Its 20 lots are found by the URL's hash in the index (sorting those 20 is the planner's choice).
    assert {index for _, _, index in plan if index} == {"ix_lots_webhook_order"}, plan
    assert ("Seq Scan", "lots", None) not in plan, plan


# A month of per-lot webhooks delivered, a flood of 100,000 due deliveries of one client (each URL on
# a host name of its own), and 30 other clients with a few due and a few retries waiting.
_DISPATCH_QUEUE = """
INSERT INTO dispatch_queue (delivery_id, job_id, client_id, webhook_url, status, next_attempt_at)
SELECT 'done-' || n, 'job-' || n % 2000, 'client-' || n % 30, 'https://h' || n % 500 || '.example/x',
       CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'delivered' END,
       now() - interval '20 days' + n * interval '3 s'
  FROM generate_series(1, 500000) n;
INSERT INTO dispatch_queue (delivery_id, job_id, client_id, webhook_url, status, next_attempt_at)
SELECT 'flood-' || n, 'job-flood', 'flooder', 'https://a' || n || '.flood.example/', 'pending',
       now() - interval '1 hour' + n * interval '1 ms'
  FROM generate_series(1, 100000) n;
INSERT INTO dispatch_queue (delivery_id, job_id, client_id, webhook_url, status, next_attempt_at)
SELECT 'open-' || n, 'job-open-' || n % 30, 'client-' || n % 30, 'https://c' || n % 30 || '.example/x',
       'pending', now() + (n % 20 - 10) * interval '1 minute'
  FROM generate_series(1, 3000) n;
ANALYZE dispatch_queue;
"""


def test_the_dispatcher_claims_in_turns_between_clients_reading_only_the_rows_it_may_take(
        infra: Infra, engine: Engine) -> None:
    # Earliest due first for everyone, the claim sorted every due row (0.8 s at 300,000) and gave
    # all of them to the client whose backlog was oldest.
    room = Room(slots=64, per_host=4, per_client=16, hosts={"c3.example": 4}, clients={"client-7": 16})
    with own_schema(infra, engine) as own, own.begin() as conn:
        conn.execute(text(_DISPATCH_QUEUE))
        claimed: list[Any] = []
        statements = executed(conn, lambda: claimed.extend(claim(conn, utc_now(), room, lease_s=60)))
        queue_plans = plans(conn, [s for s in statements if "FROM dispatch_queue" in s[0]])
    by_client = Counter(delivery.client_id for delivery in claimed)
    # Every client with a due delivery has its turn, though the flood's are due earlier: but the
    # one at its share and the one whose only host is full.
    assert set(by_client) == {f"client-{n}" for n in range(30)} - {"client-3", "client-7"} | {"flooder"}
    assert len(claimed) == 64 and by_client["flooder"] <= 16, by_client
    # The turns are read down the client index; the chosen rows are then locked by their ids.
    turns, chosen = queue_plans
    scans = {(node, index) for node, relation, index in turns if relation == "dispatch_queue"}
    down_the_index = {(scan, "ix_dispatch_client_due") for scan in ("Index Scan", "Index Only Scan")}
    assert scans and scans <= down_the_index, turns
    assert {node for node, relation, _ in chosen if relation == "dispatch_queue"} <= {
        "Index Scan", "Bitmap Heap Scan"}, chosen


# 200 clients with a backlog of 40 due deliveries each, on hosts of their own.
_CLIENTS_WITH_BACKLOGS = """
INSERT INTO dispatch_queue (delivery_id, job_id, client_id, webhook_url, status, next_attempt_at)
SELECT 'backlog-' || n, 'job-' || n % 200, 'client-' || n % 200, 'https://h' || n || '.example/x',
       'pending', now() - interval '1 hour' + n * interval '1 ms'
  FROM generate_series(1, 8000) n;
ANALYZE dispatch_queue;
"""


def test_the_dispatcher_claim_locks_about_the_rows_it_may_take_not_a_share_of_every_client(
        infra: Infra, engine: Engine) -> None:
    # Each client's candidates were read and locked (FOR UPDATE): 2 x 16 for each of 200 clients,
    # 6,400 tuple headers written (and skipped by every other instance) to hand out 64.
    room = Room(slots=64, per_host=4, per_client=16)
    with own_schema(infra, engine) as own:
        with own.begin() as conn:
            conn.execute(text(_CLIENTS_WITH_BACKLOGS))
        with own.begin() as conn:
            claimed = claim(conn, utc_now(), room, lease_s=60)
            # Rows this transaction locked: those only locked carry its xid as xmax, the leased ones
            # are new versions carrying it as xmin.
            locked = conn.execute(text("""
                SELECT count(*) FROM dispatch_queue
                 WHERE xmax::text = (txid_current() % 4294967296)::text
                    OR xmin::text = (txid_current() % 4294967296)::text""")).scalar_one()
    assert len(claimed) == 64 and len({d.client_id for d in claimed}) == 64
    assert locked <= 2 * room.slots, locked
