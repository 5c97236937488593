"""The device-check script runs in its tiny CPU mode (so a session with a GPU can trust it)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import gpu_check  # pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow


def test_tiny_determinism_check(tmp_path):
  """HAAN only (its step compiles in seconds); every check of the tiny mode together takes ~3 minutes on the shared
  CPU, too long for CI: `python benchmarks/gpu_check.py --tiny --methods=haan` runs them all."""
  records = gpu_check.main(["--tiny", "--methods=haan", "--checks=determinism", f"--out={tmp_path}"])
  assert [(r["check"], r["compute_dtype"]) for r in records] == [("determinism", "float32"),
                                                                  ("determinism", "bfloat16")]
  for record in records:
    assert "error" not in record, record
    assert record["equal"] and len(record["hash"]) == 64
