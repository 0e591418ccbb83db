"""Entry point of a render worker process (`python -m hgrad.core.worker ADDRESS`).

Its own module, imported by nothing else, so running it as __main__ never
clashes with an already imported `hgrad.core.pool`. A worker ignores SIGINT and
SIGTERM: a Ctrl-C reaches the whole process group, and the parent, which
saves the run, closes its workers (a worker also ends when its connection does).
"""

import os
import signal
import sys
from multiprocessing.connection import Client

from hgrad.core import pool

if __name__ == "__main__":
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  connection = Client(sys.argv[1], authkey=bytes.fromhex(os.environ["HGRAD_POOL_AUTHKEY"]))
  connection.send(os.getpid())
  pool.serve(connection)
