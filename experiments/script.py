"""The absl plumbing every experiment script shares: --config, --workdir, no stray arguments."""

import json
import os
import sys
from typing import Callable

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def config_and_workdir(config_file: str, help_text: str, workdir_help: str = "Output directory."):
  """Defines --config (default configs/<config_file>) and a required --workdir."""
  config = config_flags.DEFINE_config_file("config", os.path.join(_CONFIGS, config_file), help_text)
  workdir = flags.DEFINE_string("workdir", None, workdir_help, required=True)
  return config, workdir


def run(main: Callable[[], None]) -> None:
  """app.run(main) that rejects positional arguments (usually a mistyped flag) and turns a
  SIGINT / SIGTERM of a run into one line and exit code 130 / 143 (the run is saved)."""
  from hgrad.core import loop

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
      main()
    except loop.Interrupted as stop:
      sys.stderr.write(f"{stop}\n")
      sys.exit(128 + stop.signum)
  app.run(_main)


def task_script(task_name: str, variants: str) -> Callable[[], None]:
  """--config / --workdir for a registered task, and a main that runs it and prints its summary."""
  from hgrad.tasks import registry
  task = registry.get(task_name)
  config, workdir = config_and_workdir(task.CONFIG_FILE, f"Config file (variants: {variants}).",
                                       "Run directory (resumes if it holds a run).")

  def main():
    print(json.dumps(task.summary(task.run(config.value, workdir.value))))
  return main
