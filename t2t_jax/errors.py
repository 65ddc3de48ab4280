"""Errors a user can cause.

Every error that bad input (a file, a flag, a gin binding, a prompt) can cause is raised as a
`UserInputError` whose message names the bad thing (file and line, flag, value).  Entry points catch
it and print one line, never a traceback from deep inside JAX.  Internal invariants use `assert`.
"""


class UserInputError(ValueError):
  """Bad input from a user; the message names the file/record/flag/value."""


def where(path, line=None) -> str:
  """Formats a location for error messages: 'path:line' or 'path'."""
  return f"{path}:{line}" if line is not None else str(path)
