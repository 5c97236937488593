"""benchmarks/hal_evidence.py: paired statistics, the report, and a sweep that resumes where it was stopped."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import hal_evidence  # pylint: disable=wrong-import-position


def _record(level, seed, row, mof):
  return {"level": level, "seed": seed, "row": row, "mof": mof, "edit": 50.0}


def test_paired_interval_and_verdicts():
  mean, half = hal_evidence.paired_interval([1.0, 2.0, 3.0])
  assert mean == pytest.approx(2.0)
  assert half == pytest.approx(4.302652729911275 / 3 ** 0.5)  # t(0.975, 2) x sd / sqrt(n), sd = 1
  assert hal_evidence.verdict(mean, half) == "noise"
  assert hal_evidence.verdict(*hal_evidence.paired_interval([5.0, 6.0, 7.0])) == "helps"
  assert hal_evidence.verdict(*hal_evidence.paired_interval([-5.0, -6.0, -7.0])) == "hurts"
  assert hal_evidence.verdict(*hal_evidence.paired_interval([1.0])) == "one seed"


def test_differences_are_paired_by_level_and_seed_and_the_report_is_written(tmp_path):
  records = [_record(0.0, s, "baseline", 80.0 + s) for s in range(3)]
  records += [_record(0.0, s, "full", 82.0 + s) for s in range(3)]  # +2 on every seed
  records += [_record(1.0, 0, "baseline", 40.0), _record(1.0, 1, "full", 99.0)]  # no pair at level 1
  assert hal_evidence.differences(records, "full", "mof") == {0.0: [2.0, 2.0, 2.0]}
  text = hal_evidence.table(records, ["baseline", "full"], metrics=(("mof", "MoF"),))
  assert "| MoF | 81.0 → +2.0 [+2.0, +2.0] helps (n=3) | – |" in text
  hal_evidence.figure(records, ["baseline", "full"], str(tmp_path / "d.png"), metrics=(("mof", "MoF"),))
  assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_a_stopped_sweep_resumes_its_run_and_skips_finished_ones(tmp_path, monkeypatch):
  args = ["--preset=test", "--config_preset=test", "--num_train=8", "--num_test=2", "--epochs=1", "--batch_size=4",
          "--levels=0.5", "--seeds=0", "--rows=baseline", f"--workdir={tmp_path}", f"--out={tmp_path / 'out'}"]
  run_dir = tmp_path / "runs" / "d0.50_s0_baseline"
  original = hal_evidence.train.train_and_evaluate

  def stopped(config, workdir):  # As if SIGTERM arrived after the first step: checkpoint saved, no evaluation.
    return original(config, workdir, stop_after_steps=1)

  monkeypatch.setattr(hal_evidence.train, "train_and_evaluate", stopped)
  with pytest.raises(SystemExit, match="stopped at step 1"):
    hal_evidence.main(args)
  assert not (run_dir / "result.json").exists()

  monkeypatch.setattr(hal_evidence.train, "train_and_evaluate", original)
  record, = hal_evidence.main(args)
  assert record["epochs"] == 1 and 0.0 <= record["mof"] <= 100.0 and "mcc_action" in record
  steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert steps[0] == 1 and steps[-1] == 2  # The stopped part's log is kept and the run continued after it.

  def refuse(*unused):
    raise AssertionError("a finished run was trained again")

  monkeypatch.setattr(hal_evidence.train, "train_and_evaluate", refuse)
  assert hal_evidence.main(args) == [record]
  assert json.loads((tmp_path / "out" / "runs.jsonl").read_text()) == record


def test_runs_stored_by_an_earlier_sweep_are_reported_not_trained(tmp_path, monkeypatch):
  sizes = {"num_train": 8, "num_test": 2, "epochs": 1, "batch_size": 4, "tag": "", "run_seconds": 9.0, "f1@50": 30.0}
  stored = [{**_record(0.5, 0, row, mof), **sizes} for row, mof in (("baseline", 60.0), ("full", 63.0))]
  stored.append({**_record(0.5, 1, "baseline", 70.0), **sizes, "epochs": 2})  # Other sizes: not this sweep's run.
  (tmp_path / "earlier.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stored))

  def refuse(*unused):
    raise AssertionError("a stored run was trained again")

  monkeypatch.setattr(hal_evidence.train, "train_and_evaluate", refuse)
  args = ["--preset=test", "--config_preset=test", "--num_train=8", "--num_test=2", "--epochs=1", "--batch_size=4",
          "--levels=0.5", "--rows=baseline,full", f"--workdir={tmp_path / 'work'}",
          f"--stored={tmp_path / 'earlier.jsonl'}"]
  assert hal_evidence.main(args + ["--seeds=0"]) == stored[:2]
  assert hal_evidence.main(args + ["--seeds=0,1", "--report_only"]) == stored[:2]
