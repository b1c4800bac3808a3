"""The bench's CPU accounting (bench/cpu.py): what a job's processes used, read from /proc."""

from __future__ import annotations

import subprocess
import sys

from bench import cpu

# Burns half a CPU-second, then waits to be killed; the last argument names it a translator.
BUSY = ("import time\nstarted = time.process_time()\nwhile time.process_time() - started < 0.5:\n"
        "    pass\nprint('done', flush=True)\ntime.sleep(60)\n")


def test_a_process_s_cpu_between_two_snapshots_is_counted_under_its_part() -> None:
    before = cpu.snapshot()
    child = subprocess.Popen([sys.executable, "-c", BUSY, "lotlens_translator"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        after = cpu.snapshot()
        parts = cpu.used(before, after)
    finally:
        child.kill()
        child.wait()
    assert 0.45 <= parts["translator"] < 2.0
    # The child counts under the translator's part alone. (Other parts hold whatever else ran
    # meanwhile: under xdist, other workers' gateways put 1.3 CPU-s under the gateway's.)
    part, seconds = after[child.pid]
    assert (part, child.pid in before) == ("translator", False) and 0.45 <= seconds < 2.0


def test_a_backend_that_exited_counts_in_its_parent_and_a_new_one_counts_whole() -> None:
    # The postmaster (1) reaped backend 2 (3 s when first seen, 5 s at its end); backend 3 is new.
    before = {1: ("postgres", 10.0), 2: ("postgres", 3.0), 9: ("kafka", 1.0)}
    after = {1: ("postgres", 10.0 + 5.0), 3: ("postgres", 0.5), 9: ("kafka", 1.5)}
    parts = cpu.used(before, after)
    assert parts == {"kafka": 0.5, "postgres": 2.5}
    assert cpu.stack_total({**parts, "openai-standin": 7.0, "bench": 1.0}) == 3.0
    assert cpu.floor_total({**parts, "openai-standin": 7.0, "bench": 1.0}) == 4.0


def test_processes_are_told_apart_by_their_command_line() -> None:
    assert cpu.part_of("/work/.venv/bin/python -m lotlens_result_store") == "result-store"
    assert cpu.part_of("postgres: lotlens lotlens_bench 127.0.0.1(51234) idle") == "postgres"
    assert cpu.part_of("java -Xmx1g -cp /x/libs/* kafka.Kafka /x/server.properties") == "kafka"
    assert cpu.part_of(".venv/bin/python -m bench --full") == "bench"
    assert cpu.part_of("/usr/bin/bash") is None


def test_postgres_cpu_is_split_by_the_service_each_backend_serves_and_adds_up() -> None:
    # Postmaster 1 reaped backend 2 (the translator's, 3 s when first seen, 5 s at its end);
    # backend 4 serves the result-store throughout, 5 is the result-store's new one, 6 the checkpointer.
    before = {1: ("postgres", 10.0), 2: ("postgres", 3.0), 4: ("postgres", 1.0), 6: ("postgres", 2.0),
              9: ("kafka", 1.0)}
    after = {1: ("postgres", 15.0), 4: ("postgres", 3.0), 5: ("postgres", 0.5), 6: ("postgres", 2.25),
             9: ("kafka", 1.5)}
    split = cpu.postgres_by_service(before, after, {4: "result-store", 5: "result-store"})
    assert split == {"postgres for result-store": 2.5, "postgres for the rest": 2.25}
    assert sum(split.values()) == cpu.used(before, after)["postgres"]
