"""Tests for hal_jax.errors: one-line reports and exit status 2."""

import subprocess
import sys

import pytest

from hal_jax import errors


def test_format_error_is_one_line_naming_file_and_problem():
  error = errors.DataError("groundTruth/P03.txt", "label 'foo' is not\nin mapping.txt")
  line = errors.format_error(error)
  assert line == "error: groundTruth/P03.txt: label 'foo' is not in mapping.txt"
  assert "\n" not in line


def test_exit_on_bad_input_exits_2_without_traceback(capsys):
  with pytest.raises(SystemExit) as exit_info:
    with errors.exit_on_bad_input():
      raise errors.ConfigError("config.batch_size", "must be positive, got -1")
  assert exit_info.value.code == errors.BAD_INPUT_EXIT_CODE == 2
  assert capsys.readouterr().err == "error: config.batch_size: must be positive, got -1\n"


def test_exit_on_bad_input_lets_bugs_through():
  with pytest.raises(ZeroDivisionError):
    with errors.exit_on_bad_input():
      _ = 1 / 0


def test_verbose_prints_traceback():
  code = ("from hal_jax import errors\n"
          "with errors.exit_on_bad_input(verbose=True):\n"
          "  raise errors.DataError('x.npy', 'bad')\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
  assert result.returncode == 2
  assert "Traceback" in result.stderr
  assert result.stderr.strip().endswith("error: x.npy: bad")
