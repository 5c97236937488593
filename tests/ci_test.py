"""The test suite's own guards: pytest's settings (pyproject.toml) and .ci/run's "every test skipped" check."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pytest(tmp_path, source: str, *args: str) -> subprocess.CompletedProcess:
  """Runs pytest with this repository's settings on one test file holding `source`."""
  (tmp_path / "probe_test.py").write_text(textwrap.dedent(source))
  return subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", os.path.join(REPO, "pyproject.toml"),
                         f"--rootdir={tmp_path}", *args, str(tmp_path / "probe_test.py")],
                        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)


def test_a_misspelt_marker_is_an_error(tmp_path):
  result = _pytest(tmp_path, """
      import pytest

      @pytest.mark.slwo
      def test_x():
        pass
  """)
  assert result.returncode != 0
  assert "'slwo' not found in `markers`" in result.stdout + result.stderr


def test_a_hung_test_fails(tmp_path):
  # The configured timeout, shortened on the command line; the thread method ends the session with a stack dump.
  result = _pytest(tmp_path, """
      import time

      def test_hangs():
        time.sleep(60)
  """, "--timeout=2")
  assert result.returncode != 0
  assert "Timeout" in result.stdout + result.stderr


def _count(tmp_path, tests: int, skipped: int) -> subprocess.CompletedProcess:
  report = tmp_path / "junit.xml"
  report.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest" errors="0" failures="0" '
                    f'skipped="{skipped}" tests="{tests}" time="1.0"></testsuite></testsuites>')
  return subprocess.run([sys.executable, os.path.join(REPO, ".ci", "count_run_tests.py"), str(report)],
                        capture_output=True, text=True, timeout=60, check=False)


def test_ci_fails_when_every_test_was_skipped(tmp_path):
  result = _count(tmp_path, tests=7, skipped=7)
  assert result.returncode == 1
  assert "every one of the 7 collected tests was skipped" in result.stderr
  assert _count(tmp_path, tests=7, skipped=6).returncode == 0


def test_ci_reads_a_real_report_of_skipped_tests(tmp_path):
  report = tmp_path / "junit.xml"
  _pytest(tmp_path, """
      import pytest

      @pytest.mark.skip(reason="probe")
      def test_x():
        pass
  """, f"--junitxml={report}")
  result = subprocess.run([sys.executable, os.path.join(REPO, ".ci", "count_run_tests.py"), str(report)],
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 1, result.stdout + result.stderr
