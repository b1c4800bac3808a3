"""The batch stage shared by vision-batcher and translator.

Lots arrive as events and wait in the stage's work table; the batching rule groups a job's
waiting lots into shards; each shard becomes one OpenAI batch (JSONL uploaded, batch created with
metadata naming job, shard and attempt); the watcher collects finished batches and emits one
result event per lot. The shard row is written before the batch is created and the batch id is
published before it is recorded, so a crash at any point is recovered by finding the batch by its
metadata instead of paying for it twice.
"""
