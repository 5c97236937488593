"""Tests for hal_jax.metrics.detection: metrics.md examples D1-D3 and a randomized reference comparison."""

import numpy as np
import pytest

from hal_jax.data.localization_formats import Detection, DetectionAnnotation, DetectionVideo
from hal_jax.metrics import detection

# ----------------------------------------------------------------------------------------------------------------------
# Loop transcription of ActivityNet's compute_average_precision_detection + interpolated_prec_rec (metrics.md 8.2),
# with the project's tie rule (stable sort, then reversed) so that ties are compared exactly.


def stable_descending(values):
  return list(np.argsort(np.asarray(values, np.float64), kind="stable")[::-1])


def ref_tiou(a, b):
  intersection = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
  union = (a[1] - a[0]) + (b[1] - b[0]) - intersection
  return intersection / union


def ref_interpolated_ap(precision, recall):
  mprec = [0.0] + list(precision) + [0.0]
  mrec = [0.0] + list(recall) + [1.0]
  for i in range(len(mprec) - 2, -1, -1):
    mprec[i] = max(mprec[i], mprec[i + 1])
  return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def ref_class_ap(gt, pred, thresholds):
  """gt: [(video, start, end)], pred: [(video, start, end, score)] of one class -> AP per threshold."""
  if not pred:
    return [0.0] * len(thresholds)
  order = stable_descending([p[3] for p in pred])
  pred = [pred[i] for i in order]
  lock = [[-1] * len(gt) for _ in thresholds]
  tp = [[0] * len(pred) for _ in thresholds]
  fp = [[0] * len(pred) for _ in thresholds]
  for idx, (video, start, end, _) in enumerate(pred):
    this_gt = [(k, g) for k, g in enumerate(gt) if g[0] == video]
    if not this_gt:
      for t in range(len(thresholds)):
        fp[t][idx] = 1
      continue
    tiou = [ref_tiou((start, end), (g[1], g[2])) for _, g in this_gt]
    for t, threshold in enumerate(thresholds):
      for j in stable_descending(tiou):
        if tiou[j] < threshold:
          fp[t][idx] = 1
          break
        if lock[t][this_gt[j][0]] >= 0:
          continue
        tp[t][idx] = 1
        lock[t][this_gt[j][0]] = idx
        break
      if not fp[t][idx] and not tp[t][idx]:
        fp[t][idx] = 1
  aps = []
  for t in range(len(thresholds)):
    tp_sum, fp_sum = np.cumsum(tp[t]), np.cumsum(fp[t])
    aps.append(ref_interpolated_ap(tp_sum / (tp_sum + fp_sum), tp_sum / len(gt)))
  return aps


# ----------------------------------------------------------------------------------------------------------------------
# metrics.md section 9, D1-D3.


def video(name, annotations, subset="test"):
  return DetectionVideo(name, subset, 100.0, tuple(DetectionAnnotation(tuple(s), label) for label, s in annotations))


D1_GT = {"v1": video("v1", [("jump", (0, 10)), ("jump", (20, 30)), ("run", (40, 50))]),
         "v2": video("v2", [("jump", (5, 15))])}
D1_PRED = {"v1": [Detection("jump", 0.9, (1, 10)), Detection("jump", 0.8, (0, 12)), Detection("jump", 0.7, (21, 29)),
                  Detection("run", 0.6, (40, 45))],
           "v2": [Detection("jump", 0.85, (30, 40)), Detection("jump", 0.5, (5, 14))]}


def test_d1_map():
  classes, ap = detection.detection_average_precision(D1_GT, D1_PRED, tiou_thresholds=(0.5, 0.85))
  assert classes == ("jump", "run")
  np.testing.assert_allclose(ap, [[11 / 15, 1.0], [7 / 15, 0.0]], rtol=1e-12)
  scores = detection.detection_scores(D1_GT, D1_PRED, tiou_thresholds=(0.5, 0.85))
  assert scores == pytest.approx({"map@0.50": 86.6667, "map@0.85": 23.3333, "average_map": 55.0}, abs=1e-4)


def test_d2_lock_falls_through_to_next_best_gt():
  ap = detection.average_precision_at_tiou([[0, 10], [2, 12]], [3, 3], [0, 0], [[0, 10], [0, 11]], [3, 3], [0, 0],
                                           [0.9, 0.8], (0.5, 0.8), num_classes=1)
  np.testing.assert_allclose(ap[:, 0], [1.0, 0.5])


def test_equal_tiou_locks_the_later_gt_instance():
  # The first prediction overlaps A [0,10] and B [10,20] equally (1/3); the stable-then-reversed order locks B, so the
  # second prediction, which only matches B, is an FP. Locking A instead would make both TPs (AP 1).
  ap = detection.average_precision_at_tiou([[0, 10], [10, 20]], [0, 0], [0, 0], [[5, 15], [10, 20]], [0, 0], [0, 0],
                                           [0.9, 0.8], (0.3,), num_classes=1)
  assert ap[0, 0] == pytest.approx(0.5)
  assert ref_class_ap([(0, 0, 10), (0, 10, 20)], [(0, 5, 15, 0.9), (0, 10, 20, 0.8)], (0.3,)) == [0.5]


def test_d3_rounded_thresholds_pass_exact_tiou():
  trap = np.arange(0.1, 0.8, 0.1)[2]
  assert trap != 0.3
  ap = detection.average_precision_at_tiou([[0, 10]], [0], [0], [[0, 3]], [0], [0], [1.0],
                                           (detection.parse_tiou_range("0.1:0.7:0.1")[2], trap), num_classes=1)
  np.testing.assert_array_equal(ap[:, 0], [1.0, 0.0])


def test_parse_tiou_range():
  assert detection.parse_tiou_range("0.1:0.7:0.1") == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
  assert detection.parse_tiou_range("0.5:0.95:0.05") == detection.ACTIVITYNET_TIOU_THRESHOLDS
  assert detection.parse_tiou_range("0.3,0.5") == (0.3, 0.5)
  assert detection.parse_tiou_range("0.5") == (0.5,)
  for bad in ("0.1:0.75:0.1", "0.5:0.1:0.1", "0.1:0.5:0", "a:b:c", "0", "1.5", ""):
    with pytest.raises(ValueError):
      detection.parse_tiou_range(bad)


# ----------------------------------------------------------------------------------------------------------------------
# Randomized comparison (with ties in scores and in tIoU).


@pytest.mark.parametrize("seed", range(25))
def test_matches_reference_transcription(seed):
  rng = np.random.default_rng(seed)
  num_videos, num_classes = int(rng.integers(1, 5)), 3
  thresholds = (0.1, 0.3, 0.5, 0.7, 0.9)
  gt = []
  for _ in range(int(rng.integers(1, 15))):
    start = int(rng.integers(0, 40))
    gt.append((int(rng.integers(num_videos)), int(rng.integers(num_classes)), start, start + int(rng.integers(1, 12))))
  pred = []
  for _ in range(int(rng.integers(0, 40))):
    if gt and rng.random() < 0.6:  # near a GT instance: integer jitter makes equal tIoUs common
      v, c, s, e = gt[rng.integers(len(gt))]
      s, e = s + int(rng.integers(-2, 3)), e + int(rng.integers(-2, 3))
      e = max(e, s + 1)
    else:
      v, c, s = int(rng.integers(num_videos + 1)), int(rng.integers(num_classes)), int(rng.integers(0, 40))
      e = s + int(rng.integers(1, 12))
    pred.append((v, c, s, e, float(rng.integers(0, 5)) / 4))  # few distinct scores: many ties
  gt_arr = np.array(gt, np.float64).reshape(-1, 4)
  pred_arr = np.array(pred, np.float64).reshape(-1, 5)
  ap = detection.average_precision_at_tiou(gt_arr[:, 2:], gt_arr[:, 0], gt_arr[:, 1], pred_arr[:, 2:4],
                                           pred_arr[:, 0], pred_arr[:, 1], pred_arr[:, 4], thresholds, num_classes)
  for c in range(num_classes):
    class_gt = [(v, s, e) for v, cc, s, e in gt if cc == c]
    if not class_gt:
      assert np.isnan(ap[:, c]).all()
      continue
    expected = ref_class_ap(class_gt, [(v, s, e, sc) for v, cc, s, e, sc in pred if cc == c], thresholds)
    np.testing.assert_allclose(ap[:, c], expected, rtol=1e-12, atol=1e-12, err_msg=f"class {c}")


def test_empty_predictions_give_zero_ap():
  ap = detection.average_precision_at_tiou([[0, 1]], [0], [0], np.zeros((0, 2)), [], [], [], (0.5,), num_classes=1)
  np.testing.assert_array_equal(ap, [[0.0]])


# ----------------------------------------------------------------------------------------------------------------------
# Video list, subsets and label checks of detection_scores.


def test_prediction_on_video_without_gt_of_its_class_is_false_positive():
  predictions = {"v1": [Detection("run", 0.9, (0, 10)), Detection("run", 0.5, (40, 50))]}
  classes, ap = detection.detection_average_precision(D1_GT, predictions, tiou_thresholds=(0.5,))
  assert ap[0, classes.index("run")] == pytest.approx(0.5)  # rank 1 FP, rank 2 TP: precision 1/2 at recall 1


def test_evaluated_video_list_ignores_gt_and_predictions_outside_it():
  gt = dict(D1_GT, v3=video("v3", [("jump", (0, 5))]), other=video("other", [("run", (0, 5))], subset="train"))
  predictions = {"v1": [Detection("jump", 0.9, (0, 10)), Detection("jump", 0.8, (20, 30)),
                        Detection("run", 0.9, (40, 50))],
                 "v2": [Detection("jump", 0.95, (50, 60))],
                 "other": [Detection("run", 0.99, (50, 60))]}
  # Only v1: both jumps and the run are found, v2's (wrong) prediction and v2's GT are outside the list.
  scores = detection.detection_scores(gt, predictions, tiou_thresholds=(0.5,), videos=["v1"])
  assert scores["map@0.50"] == pytest.approx(100.0)
  # Subset "test" without a list: v2's FP ranks first and v2's and v3's GT are misses; "other" is not in the subset.
  scores = detection.detection_scores(gt, predictions, tiou_thresholds=(0.5,), subset="test")
  jump_ap = (1 / 4) * (2 / 3) + (1 / 4) * (2 / 3)  # recall 1/4 and 2/4 reached at precision 1/2 and 2/3
  assert scores["map@0.50"] == pytest.approx(100 * (jump_ap + 1.0) / 2)


def test_label_and_video_errors():
  with pytest.raises(ValueError, match="label 'swim' is not a ground-truth class"):
    detection.detection_scores(D1_GT, {"v1": [Detection("swim", 0.9, (0, 10))]}, tiou_thresholds=(0.5,))
  with pytest.warns(UserWarning, match="dropped 1 detection"):
    scores = detection.detection_scores(D1_GT, {"v1": [Detection("swim", 0.9, (0, 10))]}, tiou_thresholds=(0.5,),
                                        drop_unknown_labels=True)
  assert scores["average_map"] == 0.0
  with pytest.raises(ValueError, match="predicted video 'v_v1' is not in the ground truth"):
    detection.detection_scores(D1_GT, {"v_v1": []}, tiou_thresholds=(0.5,))
  with pytest.raises(ValueError, match="not in the ground truth"):
    detection.detection_scores(D1_GT, {}, tiou_thresholds=(0.5,), videos=["v9"])
  with pytest.raises(ValueError, match="in subset 'test', not 'train'"):
    detection.detection_scores(D1_GT, {}, tiou_thresholds=(0.5,), subset="train", videos=["v1"])
