"""README claims that had no test of their own (issue 19): two rows of the "Errors" table, the validation-fraction
error of checkpoint selection, and the `hal_jax.evaluate` flags --videos and --drop_unknown_labels.

(SIGINT is tested in tests/fault_tolerance_test.py; select_checkpoint="test" and localization --mode=predict through
`hal_jax.main` in tests/learning_test.py, which reuses its training runs.)
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from configs import atba as atba_config
from configs import haan as haan_config
from hal_jax import main
from hal_jax.data import synthetic
from tests import evaluate_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _last_line_of_exit_2(capsys, config, workdir) -> str:
  """Runs `main.execute` (what the command line runs after parsing flags); returns its one error line."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:
    main.execute(config, str(workdir), "train")
  assert exit_info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == "" and "Traceback" not in captured.err
  lines = captured.err.strip().splitlines()
  return lines[-1]


def test_override_without_config_is_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "hal_jax.main", "--config.num_epochs=3",
                           f"--workdir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.strip().splitlines() == [
      "error: --config.num_epochs: overrides a config key, but no --config=FILE comes before it"]
  assert not os.path.exists(tmp_path / "run")


def test_background_that_is_not_a_class(capsys, tmp_path):
  data_dir = str(tmp_path / "data")
  synthetic.generate(data_dir, synthetic.PRESETS["test"])
  config = atba_config.get_config("test")
  config.data_dir = data_dir
  config.background = "SIL"
  line = _last_line_of_exit_2(capsys, config, tmp_path / "run")
  assert line.startswith("error: config.background: 'SIL' is not a class of the data"), line
  assert not os.path.exists(tmp_path / "run")


def test_validation_selection_needs_a_validation_fraction(capsys, tmp_path):
  config = haan_config.get_config("test")
  config.select_checkpoint = "validation"
  config.validation_fraction = 0.0
  line = _last_line_of_exit_2(capsys, config, tmp_path / "run")
  assert line == "error: config.select_checkpoint: 'validation' needs config.validation_fraction > 0"
  assert not os.path.exists(tmp_path / "run")  # Refused before the data is generated or anything is written.


# ----------------------------------------------------------------------------------------------------------------------
# python -m hal_jax.evaluate --task=localization: --videos and --drop_unknown_labels.
#
# Class "a" has one instance in each test video; v1's detection hits it (tIoU 1), v2's misses (tIoU 0). Ranked by
# score: v1 (true positive), v2 (false positive): AP = precision 1 at recall 1/2 = 50 on both videos; 100 on v1 alone.


def _detection_files(tmp_path, extra_detection=None):
  ground_truth = {"version": "1.3", "taxonomy": [], "database": {
      "v1": {"subset": "test", "duration": 10.0, "annotations": [{"segment": [2.0, 4.0], "label": "a"}]},
      "v2": {"subset": "test", "duration": 10.0, "annotations": [{"segment": [2.0, 4.0], "label": "a"}]},
      "v3": {"subset": "train", "duration": 10.0, "annotations": [{"segment": [1.0, 2.0], "label": "b"}]}}}
  results = {"v1": [{"label": "a", "score": 0.9, "segment": [2.0, 4.0]}],
             "v2": [{"label": "a", "score": 0.8, "segment": [6.0, 8.0]}]}
  if extra_detection is not None:
    results["v1"].append(extra_detection)
  paths = tmp_path / "gt.json", tmp_path / "predictions.json", tmp_path / "videos.txt"
  paths[0].write_text(json.dumps(ground_truth))
  paths[1].write_text(json.dumps({"version": "1.3", "results": results, "external_data": {}}))
  paths[2].write_text("v1\n")
  return [str(path) for path in paths]


def _scores(*argv):
  status, stdout, stderr = evaluate_cli.run("--task=localization", "--subset=test", "--tiou=0.5", *argv)
  assert status == 0, stderr
  return json.loads(stdout)


def test_evaluate_videos_restricts_the_scored_videos(tmp_path):
  gt, predictions, videos = _detection_files(tmp_path)
  assert _scores(f"--ground_truth={gt}", f"--predictions={predictions}") == {"map@0.50": 50.0, "average_map": 50.0}
  assert _scores(f"--ground_truth={gt}", f"--predictions={predictions}", f"--videos={videos}") == {
      "map@0.50": 100.0, "average_map": 100.0}
  with open(videos, "w") as f:
    f.write("v1\nv3\n")  # v3 is a training video.
  status, stdout, stderr = evaluate_cli.run("--task=localization", "--subset=test", f"--ground_truth={gt}",
                                            f"--predictions={predictions}", f"--videos={videos}")
  assert status == 2 and stdout == ""
  assert stderr.strip() == f"error: {videos}: video 'v3' is not in the subset 'test' of the ground truth"


def test_evaluate_drop_unknown_labels(tmp_path):
  # A detection of class "zzz", which no ground-truth video has, is an error; with the flag it is dropped, and the
  # scores are those of the file without it. The highest score makes it rank first, so keeping it in class "a"
  # by mistake would change the AP.
  gt, predictions, _ = _detection_files(tmp_path, {"label": "zzz", "score": 0.99, "segment": [2.0, 4.0]})
  status, stdout, stderr = evaluate_cli.run("--task=localization", "--subset=test", "--tiou=0.5",
                                            f"--ground_truth={gt}", f"--predictions={predictions}")
  assert status == 2 and stdout == ""
  assert stderr.strip() == f"error: {predictions}: video 'v1' detection 1: class 'zzz' is not in the ground truth"
  with pytest.warns(UserWarning, match="dropped 1 detection"):
    scores = _scores(f"--ground_truth={gt}", f"--predictions={predictions}", "--drop_unknown_labels")
  assert scores == {"map@0.50": 50.0, "average_map": 50.0}


# ----------------------------------------------------------------------------------------------------------------------
# Errors row "no checkpoint restores", through hal_jax.main: stop touching nothing, or --start_over.


def _snapshot(directory) -> dict[str, bytes]:
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      if name != ".lock":
        with open(os.path.join(root, name), "rb") as f:
          files[os.path.relpath(os.path.join(root, name), directory)] = f.read()
  return files


@pytest.mark.slow
def test_no_restorable_checkpoint_stops_and_start_over_trains_from_zero(capsys, tmp_path):
  from hal_jax import train  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path / "data")
  synthetic.generate(data_dir, synthetic.PRESETS["test"])
  shutil.rmtree(os.path.join(data_dir, "latents"))
  config = atba_config.get_config("test")
  config.update(dict(data_dir=data_dir, num_epochs=1, checkpoint_every_steps=1, progress=False, tensorboard=False))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, stop_after_steps=2)
  checkpoints = os.path.join(workdir, "checkpoints")
  for root, _, names in os.walk(checkpoints):
    for name in names:
      if os.path.basename(root) == "meta" or "state" in root.split(os.sep):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"\x00garbage")
  before = _snapshot(workdir)
  line = _last_line_of_exit_2(capsys, config, workdir)
  assert line.startswith(f"error: {checkpoints}: none of the 2 checkpoints restores (step 2: "), line
  assert "nothing was changed" in line and "--start_over" in line
  assert _snapshot(workdir) == before

  outputs = main.execute(config, workdir, "train", start_over=True)
  assert outputs["step"] == 3  # The whole epoch, from step 0.
  assert sorted(os.listdir(checkpoints + ".unreadable")) == ["1", "2"]
  assert sorted(os.listdir(checkpoints)) == ["1", "2", "3"]
