"""The stage's decisions, with no I/O: the batching rule, the shard life cycle, lot outcomes, limits."""
