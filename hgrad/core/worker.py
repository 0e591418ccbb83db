"""Entry point of a render worker process (`python -m hgrad.core.worker ADDRESS`).

Its own module, imported by nothing else, so running it as __main__ never
clashes with an already imported `hgrad.core.pool`.
"""

import os
import sys
from multiprocessing.connection import Client

from hgrad.core import pool

if __name__ == "__main__":
  connection = Client(sys.argv[1], authkey=bytes.fromhex(os.environ["HGRAD_POOL_AUTHKEY"]))
  connection.send(os.getpid())
  pool.serve(connection)
