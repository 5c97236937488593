"""Tests for hal_jax.evaluate: the two scoring functions and the `python -m hal_jax.evaluate` command line."""

import json
import os
import subprocess
import sys

import pytest

from hal_jax import evaluate
from hal_jax.data import formats, localization_formats, segmentation_formats
from hal_jax.data.localization_formats import Detection, DetectionAnnotation, DetectionVideo
from hal_jax.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# metrics.md example S1.
S1_GT = {"v1": ["background", "a", "a", "a", "b", "b", "b", "b", "background", "background"], "v2": ["a"] * 4}
S1_PRED = {"v1": ["background", "a", "a", "b", "b", "b", "a", "b", "b", "background"], "v2": ["a"] * 4}
S1_SCORES = {"mof": 1100 / 14, "mof_bg": 900 / 11, "edit": 75.0, "f1@10": 75.0, "f1@25": 75.0, "f1@50": 50.0,
             "iou": 82.0833, "iou_tasl": 77.7778}


def write_label_dirs(root, gt=S1_GT, pred=S1_PRED):
  for name, videos in (("gt", gt), ("pred", pred)):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for video, labels in videos.items():
      segmentation_formats.write_frame_labels(os.path.join(root, name, f"{video}.txt"), labels)
  return os.path.join(root, "gt"), os.path.join(root, "pred")


def write_detection_files(root):
  """metrics.md example D1, plus a validation video that the test subset must ignore."""
  def video(name, annotations, subset="test"):
    return DetectionVideo(name, subset, 100.0, tuple(DetectionAnnotation(s, label) for label, s in annotations))
  gt = {"v1": video("v1", [("jump", (0.0, 10.0)), ("jump", (20.0, 30.0)), ("run", (40.0, 50.0))]),
        "v2": video("v2", [("jump", (5.0, 15.0))]),
        "v9": video("v9", [("run", (0.0, 5.0))], subset="validation")}
  predictions = {"v1": [Detection("jump", 0.9, (1.0, 10.0)), Detection("jump", 0.8, (0.0, 12.0)),
                        Detection("jump", 0.7, (21.0, 29.0)), Detection("run", 0.6, (40.0, 45.0))],
                 "v2": [Detection("jump", 0.85, (30.0, 40.0)), Detection("jump", 0.5, (5.0, 14.0))],
                 "v9": [Detection("run", 0.99, (50.0, 60.0))]}
  gt_path, pred_path = os.path.join(root, "gt.json"), os.path.join(root, "pred.json")
  localization_formats.write_detection_ground_truth(gt_path, gt)
  localization_formats.write_detection_predictions(pred_path, predictions)
  return gt_path, pred_path


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "hal_jax.evaluate", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=120, check=False)


# ----------------------------------------------------------------------------------------------------------------------
# Functions.


def test_evaluate_segmentation_dirs_s1(tmp_path):
  gt_dir, pred_dir = write_label_dirs(tmp_path)
  scores = evaluate.evaluate_segmentation_dirs(gt_dir, pred_dir)
  for key, value in S1_SCORES.items():
    assert scores[key] == pytest.approx(value, abs=1e-4), key


def test_segmentation_mapping_and_explicit_background(tmp_path):
  sil = lambda labels: ["SIL" if n == "background" else n for n in labels]
  gt_dir, pred_dir = write_label_dirs(tmp_path, {"v1": sil(S1_GT["v1"])}, {"v1": sil(S1_PRED["v1"])})
  mapping = tmp_path / "mapping.txt"
  formats.write_mapping(mapping, formats.LabelMap(("SIL", "a", "b", "c")))
  # Without --background nothing is background here ("background" is not a label): SIL runs count in Edit.
  assert evaluate.evaluate_segmentation_dirs(gt_dir, pred_dir, mapping_path=mapping)["edit"] == pytest.approx(200 / 3)
  scores = evaluate.evaluate_segmentation_dirs(gt_dir, pred_dir, mapping_path=mapping, background=["SIL"])
  assert scores["edit"] == pytest.approx(50.0)
  assert scores["mof_bg"] == pytest.approx(500 / 7)
  with pytest.raises(DataError, match="background label 'background' is not one of the labels"):
    evaluate.evaluate_segmentation_dirs(gt_dir, pred_dir, mapping_path=mapping, background=["background"])


def test_segmentation_bad_input_names_the_file(tmp_path):
  gt_dir, pred_dir = write_label_dirs(tmp_path, pred={"v1": S1_PRED["v1"][:-1], "v2": S1_PRED["v2"]})
  with pytest.raises(DataError, match="9 frames, but the ground truth") as info:
    evaluate.evaluate_segmentation_dirs(gt_dir, pred_dir)
  assert info.value.where == os.path.join(pred_dir, "v1.txt")
  os.remove(os.path.join(pred_dir, "v2.txt"))
  with pytest.raises(DataError, match="missing prediction") as info:
    evaluate.evaluate_segmentation_dirs(gt_dir, pred_dir)
  assert info.value.where == os.path.join(pred_dir, "v2.txt")
  mapping = tmp_path / "mapping.txt"
  formats.write_mapping(mapping, formats.LabelMap(("background", "a")))
  with pytest.raises(DataError, match="label 'b' is not in mapping.txt") as info:
    evaluate.evaluate_segmentation_dirs(gt_dir, gt_dir, mapping_path=mapping)
  assert info.value.where == os.path.join(gt_dir, "v1.txt")


def test_evaluate_localization_files(tmp_path):
  gt_path, pred_path = write_detection_files(tmp_path)
  scores = evaluate.evaluate_localization_files(gt_path, pred_path, tiou_thresholds=(0.5, 0.85), subset="test")
  assert scores == pytest.approx({"map@0.50": 86.6667, "map@0.85": 23.3333, "average_map": 55.0}, abs=1e-4)
  # With every subset, v9's run instance is a miss and its far-off prediction ranks first (an FP).
  scores = evaluate.evaluate_localization_files(gt_path, pred_path, tiou_thresholds=(0.5,))
  assert scores["map@0.50"] == pytest.approx(100 * (11 / 15 + 1 / 4) / 2)
  videos = tmp_path / "videos.txt"
  formats.write_split_list(videos, ["v1"])
  scores = evaluate.evaluate_localization_files(gt_path, pred_path, tiou_thresholds=(0.5,), subset="test",
                                             videos_path=videos)
  assert scores["map@0.50"] == pytest.approx(100 * (5 / 6 + 1.0) / 2)  # jump: TP, FP, TP with 2 GT instances
  formats.write_split_list(videos, ["v1", "v9"])
  with pytest.raises(DataError, match="'v9' is not in the subset 'test'") as info:
    evaluate.evaluate_localization_files(gt_path, pred_path, subset="test", videos_path=videos)
  assert info.value.where == str(videos)
  with pytest.raises(DataError, match="no videos of subset 'train'"):
    evaluate.evaluate_localization_files(gt_path, pred_path, subset="train")


def test_to_json_writes_nan_as_null():
  assert json.loads(evaluate.to_json({"mof": 50.0, "mof_bg": float("nan")})) == {"mof": 50.0, "mof_bg": None}


# ----------------------------------------------------------------------------------------------------------------------
# Command line.


def test_cli_segmentation_prints_json_and_plots(tmp_path):
  gt_dir, pred_dir = write_label_dirs(tmp_path)
  plots = tmp_path / "plots"
  result = run_cli("--task=segmentation", f"--ground_truth={gt_dir}", f"--predictions={pred_dir}",
                   f"--plots={plots}")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().split("\n")
  assert len(lines) == 1
  scores = json.loads(lines[0])
  assert {"mof", "mof_bg", "edit", "f1@10", "f1@25", "f1@50", "iou", "iod", "iou_tasl", "iod_tasl"} <= scores.keys()
  for key, value in S1_SCORES.items():
    assert scores[key] == pytest.approx(value, abs=1e-4), key
  assert sorted(os.listdir(plots)) == ["v1.png", "v2.png"]


def test_cli_detection_prints_json(tmp_path):
  gt_path, pred_path = write_detection_files(tmp_path)
  result = run_cli("--task=localization", f"--ground_truth={gt_path}", f"--predictions={pred_path}", "--subset=test",
                   "--tiou=0.5:0.85:0.35")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout) == pytest.approx(
      {"map@0.50": 86.6667, "map@0.85": 23.3333, "average_map": 55.0}, abs=1e-4)


@pytest.mark.parametrize("case", ["missing_prediction", "bad_task"])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, case):
  gt_dir, pred_dir = write_label_dirs(tmp_path)
  os.remove(os.path.join(pred_dir, "v2.txt"))
  task, where = ("segmentation", os.path.join(pred_dir, "v2.txt")) if case == "missing_prediction" else (
      "classification", "--task")
  result = run_cli(f"--task={task}", f"--ground_truth={gt_dir}", f"--predictions={pred_dir}")
  assert result.returncode == 2
  assert result.stdout == ""
  assert len(result.stderr.strip().split("\n")) == 1, result.stderr
  assert result.stderr.startswith(f"error: {where}: ")
