"""Under the enqueued-token budget, one client's big job does not hold every other client's jobs."""

from __future__ import annotations

from dataclasses import replace

from lotlens_common.stage.work import LotWork, VisionWork
from tests.unit.stage.conftest import World, lots


def client_lots(count: int, job_id: str, client_id: str) -> list[LotWork[VisionWork]]:
    return [replace(lot, client_id=client_id) for lot in lots(count, job_id=job_id)]


def budget_for(world: World, lot_count: int) -> None:
    """An enqueued-token limit with room for this many of the test's (alike) lots."""
    per_lot = world.stage.spec.estimate_tokens(lots(1)[0])
    world.settings = world.settings.model_copy(update={"enqueued_token_limit": lot_count * per_lot})
    world.restart()


def batch_cycle(world: World) -> None:
    """The batches running now finish, and one round collects them and sends what is due."""
    world.batches.finish = "completed"
    world.rounds()
    world.batches.finish = None


def sent_of(world: World, job_id: str) -> int:
    return sum(len(event.lot_ids) for event in world.submitted() if event.job_id == job_id)


def test_a_small_job_of_another_client_goes_within_one_batch_cycle_while_the_big_one_waits(
        world: World) -> None:
    # Found by `make chaos`: a big job, drip-fed the budget's ~120 lots a batch, was sent to its
    # last lot before any other client's job got a batch (probe jobs waited 120-163 s; with
    # OpenAI's hours-long batches, days).
    budget_for(world, 3)
    world.batches.finish = None
    world.store.add(client_lots(12, "job-a", "client-a"))
    world.rounds()
    assert sent_of(world, "job-a") == 3  # the budget is full of A's
    world.store.add(client_lots(2, "job-b", "client-b"))
    world.rounds()  # no room yet: B waits for a batch to finish, as A does
    assert sent_of(world, "job-b") == 0
    batch_cycle(world)
    waiting_a = sum(status == "waiting" for lot_id, status in world.store.statuses().items()
                    if lot_id.startswith("job-a"))
    assert sent_of(world, "job-b") > 0, f"B's lots were not sent while A's {waiting_a} lots still wait"
    assert waiting_a > 0
    assert world.store.tokens_enqueued() <= world.stage.token_limit()


def test_the_small_job_is_sent_whole_within_two_cycles_and_the_big_one_to_its_end(world: World) -> None:
    budget_for(world, 3)
    world.batches.finish = None
    world.store.add(client_lots(12, "job-a", "client-a"))
    world.rounds()
    world.store.add(client_lots(2, "job-b", "client-b"))
    batch_cycle(world)
    batch_cycle(world)
    assert sent_of(world, "job-b") == 2
    for _ in range(10):
        batch_cycle(world)
    assert sent_of(world, "job-a") == 12
    assert all(len(event.lot_ids) <= 3 for event in world.submitted())


def big_lots(count: int, job_id: str, client_id: str, images: int) -> list[LotWork[VisionWork]]:
    """Lots of `images` images each: an estimate about that many times a one-image lot's."""
    return [replace(lot, work=lot.work.model_copy(update={
        "image_urls": tuple(f"https://img/{lot.lot_id}/{n}.jpg" for n in range(images))}))
        for lot in client_lots(count, job_id, client_id)]


def finish_oldest_batch(world: World) -> None:
    """The oldest running batch finishes (the others run on), and one round collects it and sends
    what is due."""
    running = [batch for batch in world.batches.batches.values()
               if batch["status"] in ("validating", "in_progress")]
    world.batches._run(running[0], "completed")
    world.batches.finish = None
    world.rounds()


def test_a_lot_larger_than_the_whole_budget_goes_while_other_clients_keep_sending(world: World) -> None:
    # Found by review: such a lot goes only with nothing enqueued, and another client's lots,
    # one batch finishing as the next is sent, kept the budget from ever emptying: it waited
    # for good.
    budget_for(world, 3)
    world.batches.finish = None
    for n in range(2):
        world.store.add(client_lots(1, f"job-b-{n}", "client-b"))
        world.rounds()
    world.store.add(big_lots(1, "job-a", "client-a", images=5))
    per_lot = world.stage.spec.estimate_tokens(lots(1)[0])
    assert world.stage.spec.estimate_tokens(big_lots(1, "x", "x", 5)[0]) > 3 * per_lot
    for cycle in range(6):
        world.store.add(client_lots(1, f"job-b-{cycle + 2}", "client-b"))
        finish_oldest_batch(world)
    assert sent_of(world, "job-a") == 1, "the lot larger than the budget never went"


def test_the_turns_go_round_under_a_full_budget_whatever_each_client_s_lots_cost(world: World) -> None:
    # Found by review: ordered by what waits, the client of the costlier lots (here twice the
    # others') took its turn last, after the others' opening lots had eaten the room each time.
    budget_for(world, 4)
    world.batches.finish = None
    world.store.add(big_lots(12, "job-a", "client-a", images=2))
    for cycle in range(12):
        for client in ("client-b", "client-c"):
            world.store.add(client_lots(3, f"job-{client}-{cycle}", client))
        batch_cycle(world)
    sent_a = sent_of(world, "job-a")
    sent_others = sum(len(event.lot_ids) for event in world.submitted() if event.job_id != "job-a")
    assert sent_a >= 4, f"A's costlier lots got {sent_a} of {sent_a + sent_others} sent in 12 cycles"
    assert world.store.tokens_enqueued() <= world.stage.token_limit()
