"""The batch stage shared by vision-batcher and translator.

Lots arrive as events and wait in the stage's work table (`adapters/postgres.py`, written by each
service's `handlers.py`); the batching rule (`core/rule.py`) groups a job's waiting lots into
shards; `submit.py` turns each shard into one OpenAI batch (JSONL uploaded, batch created with
metadata naming job, shard and attempt, `record.py` puts it on record); `collect.py` watches
submitted batches and `settle.py` emits one result event per lot; `reconcile.py` adopts or cancels
batches no shard explains; `runner.py` is the loop. What to do next is decided by pure code
(`core/lifecycle.py` for shards and batches, `core/outcomes.py` for lots); the steps carry it out
through the ports of `ports.py` (work store, batches API, publisher), whose adapters are in
`adapters/`. The shard row is written before the batch is created and the batch id is published
before it is recorded, so a crash at any point is recovered (`recover.py`) by finding the batch by
its metadata instead of paying for it twice.
"""
