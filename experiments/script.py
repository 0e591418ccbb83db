"""The absl plumbing every experiment script shares: --config, --workdir, no stray arguments.

A user's mistake (a bad flag or config value, a wrong variant, missing or
corrupt data, no OpenGL context) ends the script with one line on stderr
and exit code 2; HGRAD_DEBUG=1 shows the traceback instead.
"""

import ast
import json
import logging as std_logging
import os
import sys
from typing import Callable

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
# What a user's input can cause: bad config values and data (ValueError, hgrad's DataError
# is one), missing files or directories, no usable OpenGL context (RenderError), a run
# directory another process is running in (WorkdirInUse).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError,
                                                NotADirectoryError)


class _PathParser(flags.ArgumentParser):
  """A path flag: `~` expanded (the shell leaves `--workdir=~/x` as it is)."""

  syntax_help = "a path"

  def parse(self, argument):
    return os.path.expanduser(argument) if isinstance(argument, str) else argument

  def flag_type(self) -> str:
    return "string"


def DEFINE_path(name: str, default: str | None, help_text: str, **kwargs):  # noqa: N802 - absl
  """A string flag holding a path, with `~` expanded."""
  return flags.DEFINE(_PathParser(), name, default, help_text, flags.FLAGS,
                      flags.ArgumentSerializer(), **kwargs)


def config_and_workdir(config_file: str, help_text: str, workdir_help: str = "Output directory."):
  """Defines --config (default configs/<config_file>) and a required --workdir."""
  try:   # ml_collections applies --config.* overrides here, while the flag is defined
    config = config_flags.DEFINE_config_file("config", os.path.join(_CONFIGS, config_file),
                                             help_text)
  except Exception as error:   # noqa: BLE001 - a typo'd field, a value of the wrong type
    _user_error("bad config override: ", error)
  workdir = DEFINE_path("workdir", None, workdir_help, required=True)
  default = flags.FLAGS["config"].value    # loaded while the flag was defined (None if it failed)
  if default is not None:
    flags.FLAGS["config"].help += " Override any field with --config.FIELD=VALUE:\n" + _fields(
        default)
  flags.register_validator("workdir", lambda value: value is None or bool(value.strip()),
                           message="--workdir is empty: name a directory for the run's outputs")
  show_in_help("config", "workdir")
  return config, workdir


def _repeated_tuple_overrides(config, argv: list[str]) -> list[str]:
  """The --config.FIELD flags of tuple fields that argv repeats.

  ml_collections lets a repeated scalar override win (the last one), but
  concatenates a repeated tuple override: `--config.arms=(a,) --config.arms=(b,)`
  gives (a, b), never what a script appending "$@" to its own flags meant.
  """
  names = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--config.")]
  repeated = []
  for name in sorted({n for n in names if names.count(n) > 1}):
    value = config
    for key in name[len("--config."):].split("."):
      value = value.get(key) if hasattr(value, "get") else None
    if isinstance(value, (tuple, list)):
      repeated.append(name)
  return repeated


def _fields(config) -> str:
  """The config's fields for --help: a line per block, its keys and values."""
  lines, scalars = [], []
  for name, value in config.items():
    if hasattr(value, "items"):
      items = ", ".join(f"{k}={v!r}" if not hasattr(v, "items") else f"{k}.*"
                        for k, v in value.items())
      lines.append(f"  {name}.{{{items}}}")
    else:
      scalars.append(f"{name}={value!r}")
  return "\n".join([f"  {', '.join(scalars)}"] + lines)


def show_in_help(*names: str) -> None:
  """Lists flags defined here under the script's own --help (absl shows only the main module's)."""
  for name in names:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def _one_line(error: BaseException) -> str:
  """The error's message on one line (ml_collections hands a KeyError's repr through)."""
  message = str(error)
  if "Traceback (most recent call last)" in message:   # a config file's error, as absl wraps it
    message = message.strip().splitlines()[-1]
  if len(message) >= 2 and message[0] == message[-1] and message[0] in "'\"":
    try:
      message = str(ast.literal_eval(message))
    except (ValueError, SyntaxError):
      pass
  return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _user_error(what: str, error: BaseException) -> None:
  if os.environ.get("HGRAD_DEBUG"):
    raise error
  sys.stderr.write(f"error: {what}{_one_line(error)}\n")
  sys.exit(2)


HELP_FLAGS = ("--help", "-help", "-?", "--helpshort", "--helpfull", "--helpxml")


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    rest = flags.FLAGS(argv)
  except SystemExit as done:   # absl exits 1 after printing --help; help asked for is a success
    if done.code == 1 and any(arg.split("=", 1)[0] in HELP_FLAGS for arg in argv[1:]):
      sys.exit(0)
    raise
  except Exception as error:   # noqa: BLE001 - flags.Error, a config file's or a field's error
    _user_error("bad flag: ", error)
  config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
  repeated = [] if config is None else _repeated_tuple_overrides(config, argv[1:])
  if repeated:
    _user_error("", ValueError(
        f"{', '.join(repeated)} given more than once: a repeated --config flag of a tuple "
        "field appends to its value instead of replacing it; give it once"))
  return rest


# Start-up lines that say nothing about the run: PyOpenGL's optional C module, and JAX
# probing for a TPU. Shown with HGRAD_DEBUG=1.
QUIET_LOGGERS = ("OpenGL.acceleratesupport", "jax._src.xla_bridge")


def _quiet_startup() -> None:
  if not os.environ.get("HGRAD_DEBUG"):
    for name in QUIET_LOGGERS:
      std_logging.getLogger(name).setLevel(std_logging.WARNING)


def run(main: Callable[[], None]) -> None:
  """app.run(main) that rejects positional arguments (usually a mistyped flag), turns a
  SIGINT / SIGTERM of a run into one line and exit code 130 / 143 (the run is saved), and a
  user's mistake into one line and exit code 2.

  hgrad (and with it JAX and numpy) is imported only once main has raised: main runs first
  in a bare process, so a script can set up the process before them (benchmarks.outer_step
  --pin sets the CPU affinity that their threads then inherit)."""

  def _main(argv):
    if len(argv) > 1:
      _user_error("", ValueError(f"unexpected arguments {argv[1:]} (a flag needs --name=value)"))
    try:
      main()
    except Exception as error:   # noqa: BLE001 - sorted below, anything else re-raised
      from hgrad.core import loop  # pylint: disable=g-import-not-at-top
      from hgrad.core.pool import RenderError  # pylint: disable=g-import-not-at-top
      from hgrad.core.run_lock import WorkdirInUse  # pylint: disable=g-import-not-at-top
      if isinstance(error, loop.Interrupted):
        sys.stderr.write(f"{error}\n")
        sys.exit(128 + error.signum)
      if isinstance(error, USER_ERRORS + (RenderError, WorkdirInUse)):
        _user_error("", error)
      raise
  _quiet_startup()
  app.run(_main, flags_parser=_parse_flags)


def task_script(task_name: str, variants: str) -> Callable[[], None]:
  """--config / --workdir for a registered task, and a main that runs it and prints its summary."""
  from hgrad.tasks import registry
  task = registry.get(task_name)
  config, workdir = config_and_workdir(task.INFO.config_file, f"Config file (variants: {variants}).",
                                       "Run directory (resumes if it holds a run).")

  def main():
    summary = task.summary(task.run(config.value, workdir.value))
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.info("outputs in %s: results.json, curve.png, samples.png, metrics.jsonl, "
                 "checkpoints/ (tensorboard --logdir %s)", workdir.value, workdir.value)
    print(json.dumps(summary))
  return main


def study_script(config_file: str, variants: str, run: Callable[..., dict],
                 table: Callable[[dict], str]) -> Callable[[], None]:
  """--config / --workdir / --report_only for a study-like harness (`run(config, workdir,
  report_only=...)` returns a summary that `table` writes), and a main that prints its table."""
  config, workdir = config_and_workdir(config_file, f"Config file (variants: {variants}).",
                                       "Directory of the runs (resumes if it holds some).")
  report_only = flags.DEFINE_bool("report_only", False,
                                  "Run nothing: write the tables of the runs finished so far.")
  show_in_help("report_only")

  def main():
    print(table(run(config.value, workdir.value, report_only=report_only.value)))
  return main
