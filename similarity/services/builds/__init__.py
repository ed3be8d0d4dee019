"""Index builds: the recorded single-flight run, its queue, its lock, its steps, the model it
uses, and the distributed variant (shards run by django-q2 workers)."""
