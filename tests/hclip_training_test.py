"""H-CLIP through the one training loop, CLI and evaluation: learning, overfitting, filter vs flat, determinism,
zero-shot prediction on a taxonomy with unseen leaves, the evaluation CLI and bad input."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import hclip as hclip_config
from hal_jax import experiment
from hal_jax import inference
from hal_jax import evaluate
from hal_jax import main
from hal_jax import train
from hal_jax.methods import base
from hal_jax.data import synthetic
from hal_jax.data import synthetic_recognition

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir: str, **overrides):
  config = hclip_config.get_config("test")
  with config.unlocked():
    config.data_dir = data_dir
    config.progress = False
    config.tensorboard = False
    config.update(overrides)
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The test preset with one leaf per parent held out (zero_shot/ has the full taxonomy)."""
  config = dataclasses.replace(synthetic_recognition.PRESETS["recognition_test"], zero_shot_leaves=1)
  return synthetic.generate(tmp_path_factory.mktemp("hclip") / "data", config)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("hclip_run"))
  config = _config(data_dir)
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_learns_overfits_and_filter_is_not_worse(trained):
  config, workdir, result = trained
  scores = result.eval_metrics
  # 2 coarse x 2 seen fine classes: chance is 50% / 25%.
  assert scores["acc_l1"] >= 90.0 and scores["path_acc"] >= 60.0, scores
  assert scores["acc_l2"] >= scores["acc_l2_flat"], scores
  assert scores["consistency_flat"] <= 100.0
  # The 64 training clips are fitted: 100% path accuracy on them.
  data = experiment.load_data(config, workdir)
  method = base.make_method(config, data.label_map.names)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  pairs = list(inference.predict_batches(method, result.state.params, data.train_eval_pipeline, mesh))
  from hal_jax.tasks import recognition  # pylint: disable=g-import-not-at-top
  fit = recognition.scores_of(data.train.labels, recognition.predicted_paths(pairs, data.train), data.taxonomy)
  assert fit["path_acc"] == 100.0, fit
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
  assert any("eval/acc_l2" in line for line in lines)


def test_predict_files_score_like_the_loop_and_zero_shot_on_unseen_leaves(trained, data_dir):
  config, workdir, result = trained
  outputs = main.execute(config, workdir, "predict")
  assert outputs["videos"] == len(experiment.load_data(config, workdir).test.videos)
  files = evaluate.evaluate_recognition_files(data_dir, outputs["predictions"], subset="test")
  for key, value in result.eval_metrics.items():
    if key != "seconds":
      assert files[key] == pytest.approx(value), key
  # Zero-shot: the same parameters on the full taxonomy; the test clips are of unseen leaves only.
  zero_shot = os.path.join(data_dir, "zero_shot")
  outputs = main.execute(_config(zero_shot), workdir, "predict")
  scores = evaluate.evaluate_recognition_files(zero_shot, outputs["predictions"], subset="test")
  with open(os.path.join(outputs["predictions"], "predictions.tsv"), encoding="utf-8") as f:
    predicted_leaves = {line.split("\t")[2] for line in f.read().split("\n")[1:] if line}
  assert predicted_leaves <= {"c0.0", "c0.1", "c0.2", "c1.0", "c1.1", "c1.2"}
  assert scores["acc_l1"] >= 75.0, scores  # Coarse classes are seen; the fine ones are new (chance 1/3 per parent).


def test_same_seed_same_parameters(data_dir, tmp_path):
  runs = [train.train_and_evaluate(_config(data_dir, num_epochs=1), str(tmp_path / name)) for name in "ab"]
  for a, b in zip(jax.tree.leaves(runs[0].state.params), jax.tree.leaves(runs[1].state.params)):
    np.testing.assert_array_equal(a, b)


def test_select_checkpoint_on_held_out_patients(data_dir, tmp_path):
  """select_checkpoint="validation": held-out training patients choose the state; its test scores are the result."""
  workdir = str(tmp_path / "run")
  config = _config(data_dir, num_epochs=3, eval_every_epochs=1, select_checkpoint="validation",
                   validation_fraction=0.25)
  result = train.train_and_evaluate(config, workdir)
  data = experiment.load_data(config, workdir)
  held_out = {clip.patient for clip in data.validation.videos}
  assert held_out and not held_out & {clip.patient for clip in data.train.videos}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  validation = [(r["step"], r["validation/acc_l2"]) for r in records if "validation/acc_l2" in r]
  assert len(validation) == 3  # One per epoch.
  best = max(score for _, score in validation)
  selected = next(step for step, score in validation if score == best)  # The first of equal scores.
  assert result.eval_metrics["selected_step"] == selected
  test_at_selected = next(r["eval/acc_l2"] for r in records if r["step"] == selected and "eval/acc_l2" in r)
  assert result.eval_metrics["acc_l2"] == test_at_selected


def test_bad_data_is_one_line_before_training(data_dir, tmp_path, capsys):
  import shutil  # pylint: disable=g-import-not-at-top
  bad = str(tmp_path / "bad")
  shutil.copytree(data_dir, bad)
  with open(os.path.join(bad, "clips.tsv"), encoding="utf-8") as f:
    text = f.read()
  with open(os.path.join(bad, "clips.tsv"), "w", encoding="utf-8") as f:
    f.write(text.replace("\tc0\tc0.0\n", "\tc0\tc1.0\n", 1))
  workdir = tmp_path / "run"
  with pytest.raises(SystemExit) as info:
    main.execute(_config(bad), str(workdir), "train")
  assert info.value.code == 2
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert last.startswith(f"error: {os.path.join(bad, 'clips.tsv')}: line ") and "inconsistent label path" in last
  assert not os.path.exists(workdir / "checkpoints")


def _write(path, text):
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def test_evaluate_cli_golden_example(tmp_path):
  """The worked example of tests/metrics/recognition_test.py through files and the command line."""
  _write(tmp_path / "taxonomy.json", json.dumps({"levels": [
      {"name": "item", "classes": ["A", "B"]},
      {"name": "score", "classes": ["a1", "a2", "b1"], "parents": [0, 0, 1]}], "leaf_values": [0, 2, 1]}))
  _write(tmp_path / "clips.tsv", "clip_id\tpatient_id\tsubset\tlabel_l1\tlabel_l2\n"
         "c1\tp1\ttest\tA\ta1\nc2\tp1\ttest\tA\ta2\nc3\tp2\ttest\tB\tb1\nc4\tp2\ttest\tA\ta2\nc5\tp3\ttrain\tB\tb1\n")
  header = "clip_id\tfiltered_l1\tfiltered_l2\tflat_l1\tflat_l2\tjoint_l1\tjoint_l2\n"
  _write(tmp_path / "predictions.tsv", header + "c1\tA\ta1\tA\ta1\tA\ta1\nc2\tA\ta1\tA\tb1\tA\ta1\n"
         "c3\tA\ta2\tA\tb1\tA\ta2\nc4\tA\ta2\tA\ta2\tA\ta2\n")
  result = subprocess.run([sys.executable, "-m", "hal_jax.evaluate", "--task=recognition",
                           f"--ground_truth={tmp_path}", f"--predictions={tmp_path / 'predictions.tsv'}",
                           "--subset=test"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  scores = json.loads(result.stdout)
  expected = {"acc_l1": 75.0, "acc_l2": 50.0, "path_acc": 50.0, "acc_l2_flat": 75.0, "consistency_flat": 50.0,
              "macro_f1": 100 * 7 / 18, "macro_f1_flat": 100 * 7 / 9, "score_mae": 2 / 3}
  for key, value in expected.items():
    assert scores[key] == pytest.approx(value), key
  # Bad input: a class name outside the taxonomy is one line naming the file and line.
  _write(tmp_path / "predictions.tsv", header + "c1\tA\tzz\tA\ta1\tA\ta1\n")
  result = subprocess.run([sys.executable, "-m", "hal_jax.evaluate", "--task=recognition",
                           f"--ground_truth={tmp_path}", f"--predictions={tmp_path}", "--subset=test"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'predictions.tsv'}: line 2: filtered_l2 'zz' is not a class of level 2")
