"""hgrad's exceptions: what a user's input or generator can get wrong, each naming the cause."""


class RenderError(RuntimeError):
  """No usable OpenGL context, or the GL pipeline failed (raised by hosts, re-raised here)."""


class GeneratorError(ValueError):
  """A generator's outputs break its declared contract (shape, dtype, keys, finite values);
  the message names the output and, for a value, the sample, its seed and its beta."""


class DataError(ValueError):
  """A dataset file is missing, unreadable or malformed; the message names it."""
