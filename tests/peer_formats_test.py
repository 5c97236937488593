"""Prediction files in the peers' formats, read back the way the reference evaluators parse them (MS-TCN's eval.py,
ActivityNet's eval_detection.py): the parsing steps are restated here, not their code."""

import json

import numpy as np
import pytest

from hal_jax import errors
from hal_jax import peer_formats
from hal_jax.data import localization_formats
from hal_jax.data import segmentation_formats
from hal_jax.metrics import segmentation as segmentation_metrics

NAMES = ("background", "pour", "stir")


def mstcn_parse(ground_truth_path, recog_path, videos):
  """MS-TCN eval.py's reading and accuracy: ground truth lines up to the last newline, recognition = line 2 split on
  whitespace, compared frame by frame over the ground truth's length."""
  correct = total = 0
  for video in videos:
    with open(f"{ground_truth_path}{video}.txt") as file:
      gt_content = file.read().split("\n")[0:-1]
    with open(recog_path + video) as file:
      recog_content = file.read().split("\n")[1].split()
    for i in range(len(gt_content)):
      total += 1
      correct += gt_content[i] == recog_content[i]
  return 100.0 * correct / total


def test_mstcn_results_read_by_the_mstcn_evaluator(tmp_path):
  rng = np.random.default_rng(0)
  gt = {f"video{i}": rng.integers(0, 3, size=20 + 7 * i) for i in range(3)}
  pred = {name: np.where(rng.random(len(ids)) < 0.7, ids, (ids + 1) % 3) for name, ids in gt.items()}
  for name, ids in gt.items():
    segmentation_formats.write_frame_labels(tmp_path / "groundTruth" / f"{name}.txt", [NAMES[i] for i in ids])
  count = peer_formats.write_mstcn_results(tmp_path / "results", {n: [NAMES[i] for i in p] for n, p in pred.items()})
  assert count == 3 and sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(gt)
  accuracy = mstcn_parse(f"{tmp_path}/groundTruth/", f"{tmp_path}/results/", sorted(gt))
  ours = segmentation_metrics.segmentation_scores([gt[n] for n in sorted(gt)], [pred[n] for n in sorted(gt)],
                                                     background_ids=[0])["mof"]
  assert accuracy == pytest.approx(ours)
  assert peer_formats.read_mstcn_result(tmp_path / "results" / "video1") == [NAMES[i] for i in pred["video1"]]


def test_mstcn_result_bad_input(tmp_path):
  with pytest.raises(errors.DataError, match="label .add milk. is empty or has a space"):
    peer_formats.write_mstcn_result(tmp_path / "v", ["pour", "add milk"])
  (tmp_path / "w").write_text("pour stir\n")
  with pytest.raises(errors.DataError, match="line 1: expected"):
    peer_formats.read_mstcn_result(tmp_path / "w")
  (tmp_path / "x").write_text(peer_formats.MSTCN_HEADER + "\n")
  with pytest.raises(errors.DataError, match="line 2: no frame labels"):
    peer_formats.read_mstcn_result(tmp_path / "x")


def activitynet_parse(ground_truth_path, prediction_path, subset):
  """ActivityNet eval_detection.py's reading: required top-level fields, the class index of the subset's
  annotations, every predicted label looked up in it, segments and scores as numbers."""
  with open(ground_truth_path) as file:
    data = json.load(file)
  assert all(field in data for field in ["database", "taxonomy", "version"])
  activity_index, ground_truth = {}, []
  for videoid, v in data["database"].items():
    if subset != v["subset"]:
      continue
    for ann in v["annotations"]:
      activity_index.setdefault(ann["label"], len(activity_index))
      ground_truth.append((videoid, float(ann["segment"][0]), float(ann["segment"][1]), activity_index[ann["label"]]))
  with open(prediction_path) as file:
    data = json.load(file)
  assert all(field in data for field in ["results", "version", "external_data"])
  prediction = []
  for videoid, v in data["results"].items():
    for result in v:
      label = activity_index[result["label"]]  # a KeyError here stops the reference evaluator
      prediction.append((videoid, float(result["segment"][0]), float(result["segment"][1]), label,
                         float(result["score"])))
  return ground_truth, prediction


def test_activitynet_predictions_read_by_the_activitynet_evaluator(tmp_path):
  annotation = localization_formats.DetectionAnnotation
  gt = {"v1": localization_formats.DetectionVideo("v1", "validation", 30.0, (annotation((1.0, 5.0), "pour"),)),
        "v2": localization_formats.DetectionVideo("v2", "validation", 20.0, (annotation((2.0, 4.0), "stir"),)),
        "v3": localization_formats.DetectionVideo("v3", "training", 20.0, (annotation((2.0, 4.0), "shake"),))}
  localization_formats.write_detection_ground_truth(tmp_path / "gt.json", gt)
  found = {"v1": [localization_formats.Detection("pour", 0.9, (1.0, 5.5)),
                  localization_formats.Detection("shake", 0.8, (6.0, 7.0))],  # not annotated in validation
           "v2": [localization_formats.Detection("stir", 0.4, (2.5, 4.0))],
           "v3": [localization_formats.Detection("shake", 0.7, (2.0, 4.0))]}  # another subset
  # The project's own detections.json keeps every class: the reference evaluator stops on "shake".
  localization_formats.write_detection_predictions(tmp_path / "detections.json", found)
  with pytest.raises(KeyError, match="shake"):
    activitynet_parse(tmp_path / "gt.json", tmp_path / "detections.json", "validation")
  dropped = peer_formats.write_activitynet_predictions(tmp_path / "anet.json", found, gt, "validation")
  assert dropped == 1
  ground_truth, prediction = activitynet_parse(tmp_path / "gt.json", tmp_path / "anet.json", "validation")
  assert len(ground_truth) == 2
  assert sorted(prediction) == [("v1", 1.0, 5.5, 0, 0.9), ("v2", 2.5, 4.0, 1, 0.4)]
  results, _ = peer_formats.activitynet_results(found, gt, "validation", videos=["v2"])
  assert list(results) == ["v2"]
