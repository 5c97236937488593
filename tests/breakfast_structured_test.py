"""benchmarks/breakfast_structured.py: paired runs at the paper's hyper-parameters, resumable, and its report."""

import json
import os
import sys
import types

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import breakfast_structured  # pylint: disable=wrong-import-position


def _fake_training(calls):
  """A stand-in for train.train_and_evaluate: records the config, writes a log and returns seed-dependent metrics
  (HAL = ATBA + 2 + seed on every metric)."""

  def train_and_evaluate(config, workdir):
    calls.append(config)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w", encoding="utf-8") as f:
      f.write(json.dumps({"step": 1}) + "\n")
    value = 50.0 + config.seed + (2.0 + config.seed if config.method.endswith(".hal") else 0.0)
    metrics = {key: value for key, _ in breakfast_structured.METRICS}
    return types.SimpleNamespace(eval_metrics=metrics, steps=4)

  return train_and_evaluate


def test_runs_are_paired_at_the_papers_settings_resumable_and_reported(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(breakfast_structured.train, "train_and_evaluate", _fake_training(calls))
  out = tmp_path / "out"
  args = ["--preset=test", "--config_preset=breakfast", "--feature_dim=16", "--num_train=4", "--num_test=2",
          "--epochs=10", f"--workdir={tmp_path / 'work'}", f"--out={out}"]
  breakfast_structured.main(args + ["--seeds=0"])
  baseline, full = calls
  assert (baseline.method, full.method) == ("hal_jax.methods.atba", "hal_jax.methods.hal")
  assert baseline.data_dir == full.data_dir and baseline.seed == full.seed == 0
  for config in calls:  # configs/atba.py:breakfast (the paper's), the stage switch at 10 % of the epochs.
    assert (config.batch_size, config.learning_rate, config.hidden_dim) == (32, 5e-4, 256)
    assert (config.num_epochs, config.stage_epoch, config.warmup_epochs) == (10, 1, 1)
  assert (baseline.num_layers, full.num_layers) == (6, 5)  # configs/atba.py:breakfast and configs/hal.py:breakfast.
  assert not (tmp_path / "work" / "data" / "s0").exists()  # Deleted once both runs of the seed finished.
  assert json.loads((out / "s0_full" / "metrics.jsonl").read_text()) == {"step": 1}

  summary = breakfast_structured.main(args + ["--seeds=0,1,2"])  # Seed 0 is not trained again.
  assert len(calls) == 6 and [c.seed for c in calls[2:]] == [1, 1, 2, 2]
  assert summary["seeds"] == [0, 1, 2]
  mean, half = summary["mof"]["difference"]
  assert mean == pytest.approx(3.0) and half == pytest.approx(4.302652729911275 / 3 ** 0.5)  # t(0.975, 2) sd/√n
  assert summary["mof"]["baseline"] == pytest.approx((51.0, 1.0))
  assert "| MoF | 51.0 ± 1.0 | 54.0 ± 2.0 | +3.0 [+0.5, +5.5] helps |" in (out / "table.md").read_text()
  assert len((out / "runs.jsonl").read_text().splitlines()) == 6

  breakfast_structured.main(args + ["--seeds=0,1,2", "--epochs=5"])  # Other sizes: trained, not taken from the file.
  assert len(calls) == 12
