"""One process per run directory.

A second process on the same workdir (the same command started twice, two
study queues sharing an arm) would resume from the same checkpoint, append its
steps to the same metrics.jsonl and race the first for checkpoints/: curves
with every step twice and a run that no longer replays. The run holds an
exclusive `flock` on `workdir/.lock` while it runs; the kernel drops it when
the process ends, SIGKILL included, so a crashed run never leaves a stale
lock behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Iterator

from absl import logging

try:
  import fcntl
except ImportError:   # not POSIX (Windows): no lock, as before
  fcntl = None

LOCK_FILE = ".lock"


class WorkdirInUse(RuntimeError):
  """Another live process is running in this workdir."""


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds `workdir` for this process; raises WorkdirInUse, naming the holder, if it is taken."""
  if fcntl is None:
    yield
    return
  fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "a process"
      raise WorkdirInUse(
          f"{workdir} is in use by another run ({holder}): two processes on one run would "
          "write the same metrics and checkpoints. Wait for it to finish, or stop it "
          "(SIGTERM saves it) and rerun this command to resume.") from None
    except OSError as error:   # a file system without locks (some network mounts)
      logging.warning("cannot lock %s (%s): nothing stops a second process on this run",
                      workdir, error)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    yield
  finally:
    os.close(fd)   # releases the lock
