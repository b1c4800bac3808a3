"""The stage's ports, implemented for the outside world: PostgreSQL, the direct API, Kafka."""
