"""Runs the `hal_jax.evaluate` command line in this process, with a fresh flag set per call (for tests)."""

import contextlib
import io

from absl import flags

from hal_jax import evaluate


def run(*argv: str) -> tuple[int, str, str]:
  """(exit status, stdout, stderr) of ``python -m hal_jax.evaluate ARGV``."""
  flag_values = evaluate.define_flags(flags.FlagValues())
  flag_values(["evaluate", *argv])
  out, err = io.StringIO(), io.StringIO()
  status = 0
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      evaluate.main(["evaluate"], flag_values)
    except SystemExit as exit_info:
      status = exit_info.code
  return status, out.getvalue(), err.getvalue()
