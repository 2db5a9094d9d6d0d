"""Tributary engine: per-user Redis Streams into the database, in batches, exactly once."""
