"""gunicorn settings for `make serve` and production: `gunicorn -c config/gunicorn.py config.wsgi`.

Threaded workers: a connection that sends nothing, or sends slowly, holds one thread of a
worker (until it sends or `timeout` passes), not the whole worker; with sync workers a couple
of idle connections stopped `make serve`. 2 x 4 threads only raise that bar to 8: in
production a buffering reverse proxy in front absorbs slow clients (docs/operations.md).
Searches are thread-safe (the index store and embedders lock what they share).

No keep-alive: a kept-alive connection stays with the worker that accepted it, and one
worker often accepted most of a client's connections (measured with 8 connections: 7/1
and 8/0 splits, one core idle, 0.4x the throughput of an even split; docs/benchmarks.md).
Closing after each response lets the kernel hand every request to a worker that is waiting
in accept(). A reverse proxy opens a connection per request anyway (nginx's default).
Each request thread runs Faiss on one OpenMP thread (similarity.selectors.store).
"""

workers = 2
worker_class = "gthread"
threads = 4
timeout = 30  # seconds a worker may be silent before the arbiter restarts it
keepalive = 0  # close after each response (above)
