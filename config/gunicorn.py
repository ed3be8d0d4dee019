"""gunicorn settings for `make serve` and production: `gunicorn -c config/gunicorn.py config.wsgi`.

Threaded workers: a connection that sends nothing, or sends slowly, holds one thread of a
worker (until it sends or `timeout` passes), not the whole worker; with sync workers a couple
of idle connections stopped `make serve`. 2 x 4 threads only raise that bar to 8: in
production a buffering reverse proxy in front absorbs slow clients (docs/operations.md).
Searches are thread-safe (the index store and embedders lock what they share).
"""

workers = 2
worker_class = "gthread"
threads = 4
timeout = 30  # seconds a worker may be silent before the arbiter restarts it
