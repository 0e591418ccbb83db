"""Entry point of a render worker process (`python -m hgrad.core.worker ADDRESS`).

Its own module, imported by nothing else, so running it as __main__ never
clashes with an already imported `hgrad.core.pool`. A worker ignores SIGINT and
SIGTERM: a Ctrl-C reaches the whole process group, and the parent, which
saves the run, closes its workers (a worker also ends when its connection does).
`HGRAD_WORKER_CPUS` (e.g. "0" or "0,2") pins every worker to those cores, so
renders and XLA can be given cores of their own (benchmarks.outer_step).
"""

import os
import signal
import sys
from multiprocessing.connection import Client

from hgrad.core import pool

if __name__ == "__main__":
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  if os.environ.get("HGRAD_WORKER_CPUS"):
    os.sched_setaffinity(0, {int(c) for c in os.environ["HGRAD_WORKER_CPUS"].split(",")})
  connection = Client(sys.argv[1], authkey=bytes.fromhex(os.environ["HGRAD_POOL_AUTHKEY"]))
  connection.send(os.getpid())
  pool.serve(connection)
