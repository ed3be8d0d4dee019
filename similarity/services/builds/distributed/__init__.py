"""Distributed builds: the plan (stages of shards), the shard rows under leases, the worker."""
