"""Tests for hal_jax.metrics.segmentation: metrics.md worked examples and randomized reference comparisons."""

import numpy as np
import pytest

from hal_jax.metrics import segmentation

# ----------------------------------------------------------------------------------------------------------------------
# Straightforward per-video transcriptions of the reference semantics (MS-TCN eval.py, TCFPN-ISBA via MuCon/ATBA,
# TASL inference.py), written from metrics.md; deliberately loop-based and independent of the implementation.


def ref_segments(labels, bg_class):
  """MS-TCN get_labels_start_end_time (fixed end-of-sequence version): background runs dropped."""
  labels_out, starts, ends = [], [], []
  last = labels[0]
  if labels[0] not in bg_class:
    labels_out.append(labels[0])
    starts.append(0)
  for i in range(len(labels)):
    if labels[i] != last:
      if labels[i] not in bg_class:
        labels_out.append(labels[i])
        starts.append(i)
      if last not in bg_class:
        ends.append(i)
      last = labels[i]
  if last not in bg_class:
    ends.append(len(labels))
  return labels_out, starts, ends


def ref_levenshtein(p, y):
  d = [[0] * (len(y) + 1) for _ in range(len(p) + 1)]
  for i in range(len(p) + 1):
    d[i][0] = i
  for j in range(len(y) + 1):
    d[0][j] = j
  for j in range(1, len(y) + 1):
    for i in range(1, len(p) + 1):
      if y[j - 1] == p[i - 1]:
        d[i][j] = d[i - 1][j - 1]
      else:
        d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + 1)
  return d[-1][-1]


def ref_edit(pred, gt, bg_class):
  p, _, _ = ref_segments(pred, bg_class)
  y, _, _ = ref_segments(gt, bg_class)
  if not p and not y:
    return 100.0  # [DECISION] of metrics.md section 5 (the reference gives NaN)
  return (1 - ref_levenshtein(p, y) / max(len(p), len(y))) * 100


def ref_f_score(pred, gt, overlap, bg_class):
  p_label, p_start, p_end = ref_segments(pred, bg_class)
  y_label, y_start, y_end = ref_segments(gt, bg_class)
  tp = fp = 0
  hits = [0] * len(y_label)
  for j in range(len(p_label)):
    if not y_label:
      fp += 1  # [DECISION] of metrics.md section 6 (the reference crashes)
      continue
    scores = []
    for x in range(len(y_label)):
      intersection = min(p_end[j], y_end[x]) - max(p_start[j], y_start[x])
      union = max(p_end[j], y_end[x]) - min(p_start[j], y_start[x])
      scores.append(intersection / union if p_label[j] == y_label[x] else 0.0)
    idx = max(range(len(scores)), key=lambda k: (scores[k], -k))  # argmax, first on ties
    if scores[idx] >= overlap and not hits[idx]:
      tp += 1
      hits[idx] = 1
    else:
      fp += 1
  return tp, fp, len(y_label) - sum(hits)


def ref_runs(labels):
  """All runs (label, start, end) as ISBA's segment_labels / segment_intervals."""
  runs, start = [], 0
  for i in range(1, len(labels) + 1):
    if i == len(labels) or labels[i] != labels[start]:
      runs.append((labels[start], start, i))
      start = i
  return runs


def ref_isba_video(pred, gt, bg_class):
  """(IoU, IoD) of one video, or None when no GT segment is left (the reference's NaN)."""
  true = [r for r in ref_runs(gt) if bg_class is None or r[0] not in bg_class]
  predicted = [r for r in ref_runs(pred) if bg_class is None or r[0] not in bg_class]
  if not true:
    return None
  ious, iods = [], []
  for tl, ts, te in true:
    best_iou = best_iod = 0.0
    for pl, ps, pe in predicted:
      if tl == pl:
        intersection = min(pe, te) - max(ps, ts)
        best_iou = max(best_iou, intersection / (max(pe, te) - min(ps, ts)))
        best_iod = max(best_iod, intersection / (pe - ps))
    ious.append(best_iou)
    iods.append(best_iod)
  return sum(ious) / len(ious), sum(iods) / len(iods)


def ref_tasl_video(pred, gt, bg_class):
  """TASL compute_IoU_IoD for one video; classes in bg_class are left out; None when no class is left."""
  ious, iods = [], []
  for c in sorted(set(gt)):
    if c in bg_class:
      continue
    recog = [p == c for p in pred]
    truth = [g == c for g in gt]
    union = sum(r or t for r, t in zip(recog, truth))
    intersect = sum(r and t for r, t in zip(recog, truth))
    ious.append(intersect / (union + 1e-6))
    iods.append(intersect / (sum(recog) + 1e-6))
  if not ious:
    return None
  return sum(ious) / len(ious), sum(iods) / len(iods)


def ref_predicted_segment_ious(pred, gt, bg_class):
  """Loop transcription of the pose paper's IoU: per non-background predicted run, the IoU with the same-label GT run
  of largest intersection (ties: larger IoU), 0 without one."""
  values = []
  gt_runs = [r for r in ref_runs(gt) if r[0] not in bg_class]
  for label, start, end in (r for r in ref_runs(pred) if r[0] not in bg_class):
    best = (0, 0.0)
    for g_label, g_start, g_end in gt_runs:
      inter = min(end, g_end) - max(start, g_start)
      if g_label == label and inter > 0:
        best = max(best, (inter, inter / (max(end, g_end) - min(start, g_start))))
    values.append(best[1])
  return values


def ref_scores(gt_list, pred_list, bg, edit_f1_bg):
  """All keys of segmentation_scores from the loop transcriptions (0-100)."""
  gt_all = [g for video in gt_list for g in video]
  pred_all = [p for video in pred_list for p in video]
  fg = [(g, p) for g, p in zip(gt_all, pred_all) if g not in bg]
  scores = {"mof": 100 * sum(g == p for g, p in zip(gt_all, pred_all)) / len(gt_all),
            "mof_bg": 100 * sum(g == p for g, p in fg) / len(fg) if fg else float("nan"),
            "edit": float(np.mean([ref_edit(p, g, edit_f1_bg) for g, p in zip(gt_list, pred_list)]))}
  for overlap, key in ((0.10, "f1@10"), (0.25, "f1@25"), (0.50, "f1@50")):
    tp = fp = fn = 0
    for g, p in zip(gt_list, pred_list):
      a, b, c = ref_f_score(p, g, overlap, edit_f1_bg)
      tp, fp, fn = tp + a, fp + b, fn + c
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    scores[key] = 200 * precision * recall / (precision + recall) if precision + recall else 0.0

  def video_mean(fn, bg_class, suffix):
    values = [v for v in (fn(p, g, bg_class) for g, p in zip(gt_list, pred_list)) if v is not None]
    iou = 100 * float(np.mean([v[0] for v in values])) if values else float("nan")
    iod = 100 * float(np.mean([v[1] for v in values])) if values else float("nan")
    scores["iou" + suffix], scores["iod" + suffix] = iou, iod

  video_mean(ref_isba_video, None, "")
  video_mean(ref_isba_video, bg, "_nobg")
  video_mean(ref_tasl_video, (), "_tasl")
  video_mean(ref_tasl_video, bg, "_tasl_nobg")
  pooled = [v for g, p in zip(gt_list, pred_list) for v in ref_predicted_segment_ious(p, g, bg)]
  scores["iou_pred"] = 100 * float(np.mean(pooled)) if pooled else float("nan")
  return scores


# ----------------------------------------------------------------------------------------------------------------------
# metrics.md section 9, examples S1 and S2.

NAMES = ("background", "a", "b")
S1_GT1 = ["background", "a", "a", "a", "b", "b", "b", "b", "background", "background"]
S1_PRED1 = ["background", "a", "a", "b", "b", "b", "a", "b", "b", "background"]
S1_VIDEO2 = ["a"] * 4


def ids(names, classes=NAMES):
  return np.array([classes.index(n) for n in names], np.int32)


def test_s1_one_video():
  scores = segmentation.segmentation_scores([ids(S1_GT1)], [ids(S1_PRED1)], background_ids=[0])
  assert scores["mof"] == pytest.approx(70.0)
  assert scores["mof_bg"] == pytest.approx(500 / 7)
  assert scores["edit"] == pytest.approx(50.0)
  assert scores["f1@10"] == pytest.approx(200 / 3)
  assert scores["f1@25"] == pytest.approx(200 / 3)
  assert scores["f1@50"] == pytest.approx(100 / 3)


def test_s1_two_videos_pooled_and_micro():
  scores = segmentation.segmentation_scores([ids(S1_GT1), ids(S1_VIDEO2)], [ids(S1_PRED1), ids(S1_VIDEO2)],
                                            background_ids=[0])
  assert scores["mof"] == pytest.approx(1100 / 14)  # 78.57 pooled, not the per-video mean 85.00
  assert scores["mof_bg"] == pytest.approx(900 / 11)
  assert scores["edit"] == pytest.approx(75.0)
  assert [scores["f1@10"], scores["f1@25"], scores["f1@50"]] == pytest.approx([75.0, 75.0, 50.0])


def test_s1_sil_variant_keeps_sil_with_mstcn_default():
  classes = ("SIL", "a", "b")
  gt = ids(["SIL" if n == "background" else n for n in S1_GT1], classes)
  pred = ids(["SIL" if n == "background" else n for n in S1_PRED1], classes)
  edit_f1_bg = segmentation.mstcn_background_ids(classes)
  assert edit_f1_bg == ()
  scores = segmentation.segmentation_scores([gt], [pred], background_ids=[0], edit_f1_background_ids=edit_f1_bg)
  assert scores["edit"] == pytest.approx(200 / 3)
  assert scores["f1@10"] == pytest.approx(80.0)
  assert scores["f1@50"] == pytest.approx(60.0)
  assert scores["mof_bg"] == pytest.approx(500 / 7)  # MoF-Bg still drops the dataset's background (SIL)


def test_s2_iou_iod_both_definitions():
  scores = segmentation.segmentation_scores([ids(S1_GT1)], [ids(S1_PRED1)], background_ids=[0])
  assert scores["iou"] == pytest.approx(64.1667, abs=1e-4)
  assert scores["iou_nobg"] == pytest.approx(53.3333, abs=1e-4)
  assert scores["iod"] == pytest.approx(91.6667, abs=1e-4)
  assert scores["iod_nobg"] == pytest.approx(83.3333, abs=1e-4)
  assert scores["iou_tasl"] == pytest.approx(55.5556, abs=1e-4)
  assert scores["iod_tasl"] == pytest.approx(75.5556, abs=1e-4)
  assert scores["iou_tasl_nobg"] == pytest.approx(50.0, abs=1e-4)
  assert scores["iod_tasl_nobg"] == pytest.approx(63.3333, abs=1e-4)
  both = segmentation.segmentation_scores([ids(S1_GT1), ids(S1_VIDEO2)], [ids(S1_PRED1), ids(S1_VIDEO2)],
                                          background_ids=[0])
  assert both["iou"] == pytest.approx(82.0833, abs=1e-4)
  assert both["iou_tasl"] == pytest.approx(77.7778, abs=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# Randomized comparison with the transcriptions.


def random_labels(rng, length, num_classes, mean_run):
  labels, value = [], int(rng.integers(num_classes))
  while len(labels) < length:
    labels.extend([value] * int(rng.integers(1, 2 * mean_run)))
    value = int(rng.integers(num_classes))
  return np.array(labels[:length], np.int64)


def random_set(rng):
  gt_list, pred_list = [], []
  for _ in range(int(rng.integers(1, 7))):
    length = int(rng.integers(1, 70))
    gt = random_labels(rng, length, 4, 8)
    kind = rng.integers(4)
    if kind == 0:
      pred = random_labels(rng, length, 4, 3)  # fragmented
    elif kind == 1:
      pred = np.roll(gt, int(rng.integers(-4, 5)))  # shifted boundaries
    elif kind == 2:
      pred = np.where(rng.random(length) < 0.15, rng.integers(0, 4, length), gt)  # flicker
    else:
      pred = np.zeros(length, np.int64)  # all background
    if rng.random() < 0.15:
      gt = np.zeros(length, np.int64)  # all-background video
    gt_list.append(gt)
    pred_list.append(pred)
  return gt_list, pred_list


@pytest.mark.filterwarnings("ignore:.*skipped:UserWarning")  # all-background videos are skipped by *_nobg
@pytest.mark.parametrize("seed", range(40))
def test_matches_reference_transcriptions(seed):
  rng = np.random.default_rng(seed)
  gt_list, pred_list = random_set(rng)
  bg = (0,) if seed % 3 else (0, 3)
  edit_f1_bg = bg if seed % 2 else (0,)
  scores = segmentation.segmentation_scores(gt_list, pred_list, background_ids=bg, edit_f1_background_ids=edit_f1_bg)
  expected = ref_scores([list(g) for g in gt_list], [list(p) for p in pred_list], bg, edit_f1_bg)
  assert scores.keys() == expected.keys()
  for key, value in expected.items():
    assert scores[key] == pytest.approx(value, rel=1e-9, abs=1e-9, nan_ok=True), key


def test_levenshtein_matches_reference():
  rng = np.random.default_rng(0)
  for _ in range(200):
    a = rng.integers(0, 3, int(rng.integers(0, 9)))
    b = rng.integers(0, 3, int(rng.integers(0, 9)))
    assert segmentation.levenshtein(a, b) == ref_levenshtein(list(a), list(b))


# ----------------------------------------------------------------------------------------------------------------------
# Decisions, accumulation and input checks.


@pytest.mark.filterwarnings("ignore:.*skipped:UserWarning")
def test_counts_are_additive():
  rng = np.random.default_rng(7)
  gt_list, pred_list = random_set(rng)
  gt_list += [ids(S1_GT1), ids(S1_VIDEO2)]
  pred_list += [ids(S1_PRED1), ids(S1_VIDEO2)]
  whole = segmentation.segmentation_scores(gt_list, pred_list, background_ids=[0])
  parts = (segmentation.segmentation_counts(gt_list[:2], pred_list[:2], background_ids=[0])
           + segmentation.segmentation_counts(gt_list[2:], pred_list[2:], background_ids=[0]))
  assert parts.scores() == pytest.approx(whole, nan_ok=True)


def test_all_background_video_edit_is_100_and_nobg_skips_it_with_a_warning():
  gt = [np.zeros(5, np.int64), ids(S1_GT1)]
  pred = [np.zeros(5, np.int64), ids(S1_PRED1)]
  with pytest.warns(UserWarning, match="skipped 1 video"):
    scores = segmentation.segmentation_scores(gt, pred, background_ids=[0])
  assert scores["edit"] == pytest.approx((100 + 50) / 2)
  assert scores["iou_nobg"] == pytest.approx(53.3333, abs=1e-4)  # only video 2 counts
  assert scores["iou"] == pytest.approx((100 + 64.1667) / 2, abs=1e-4)


def test_f1_best_gt_is_the_first_on_ties_without_fall_back():
  gt = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1])  # a[0,4) a[6,10)
  pred = np.array([1, 1, 2, 1, 1, 1, 1, 0, 0, 0])  # a[0,2) b[2,3) a[3,7)
  # a[3,7) has IoU 1/7 with both GT segments; the first (already matched by a[0,2)) is picked, so it is an FP.
  # TP 1, FP 2, FN 1 -> P 1/3, R 1/2, F1 40 (80 if the free second segment were taken).
  assert segmentation.segmentation_scores([gt], [pred], background_ids=[0])["f1@10"] == pytest.approx(40.0)
  assert ref_f_score(list(pred), list(gt), 0.1, (0,)) == (1, 2, 1)


@pytest.mark.filterwarnings("ignore:.*skipped:UserWarning")
def test_predicted_segments_without_gt_segments_are_false_positives():
  gt = [np.zeros(6, np.int64), np.array([1, 1, 1, 1])]
  pred = [np.array([0, 1, 1, 0, 2, 2]), np.array([1, 1, 1, 1])]
  scores = segmentation.segmentation_scores(gt, pred, background_ids=[0])
  # TP 1 (video 2), FP 2 (video 1), FN 0: P = 1/3, R = 1.
  assert scores["f1@50"] == pytest.approx(50.0)


@pytest.mark.filterwarnings("ignore:.*skipped:UserWarning")
def test_no_foreground_frames_gives_nan_mof_bg():
  scores = segmentation.segmentation_scores([np.zeros(3, np.int64)], [np.zeros(3, np.int64)], background_ids=[0])
  assert np.isnan(scores["mof_bg"])
  assert scores["mof"] == 100.0


def test_input_errors():
  with pytest.raises(ValueError, match="video 0: prediction has 3 frames, ground truth 4"):
    segmentation.segmentation_scores([np.zeros(4, np.int64)], [np.zeros(3, np.int64)], background_ids=[0])
  with pytest.raises(ValueError, match="integer ids"):
    segmentation.segmentation_scores([np.array(["a"])], [np.array(["a"])], background_ids=[0])
  with pytest.raises(TypeError, match="integer label ids"):
    segmentation.segmentation_scores([np.zeros(4, np.int64)], [np.zeros(4, np.int64)], background_ids=["SIL"])
  with pytest.raises(ValueError, match="no frames"):
    segmentation.segmentation_scores([np.zeros(0, np.int64)], [np.zeros(0, np.int64)], background_ids=[0])
  # A bare int is accepted as a one-element list.
  assert segmentation.segmentation_scores([ids(S1_GT1)], [ids(S1_PRED1)], background_ids=0)["mof_bg"] == (
      pytest.approx(500 / 7))


def test_long_fragmented_prediction_matches_reference():
  rng = np.random.default_rng(1)
  gt = random_labels(rng, 10000, 5, 200)
  # ~2500 predicted segments against ~50 GT segments: the pair search must stay linear, and still be right.
  pred = np.where(rng.random(10000) < 0.15, rng.integers(0, 5, 10000), gt)
  scores = segmentation.segmentation_scores([gt], [pred], background_ids=[0])
  expected = ref_scores([list(gt)], [list(pred)], (0,), (0,))
  for key in ("f1@10", "f1@50", "edit", "iou", "iod_nobg"):
    assert scores[key] == pytest.approx(expected[key], rel=1e-9), key
  assert scores["f1@10"] > 0


def test_pose_paper_per_predicted_segment_iou_golden():
  """Worked by hand (spec pose.md §7), background id 0 dropped on both sides.

  Video 1: gt 1111 22222 0, pred 11 2222 11 00. Predicted segments: 1@[0,2) vs GT 1@[0,4): 2/4 = 0.5;
  2@[2,6) vs GT 2@[4,9): 2/7; 1@[6,8): no same-class overlap, 0.
  Video 2: gt 11 3 1x17, pred 1x6 3x14. 1@[0,6) overlaps GT 1@[0,2) by 2 (IoU 2/6) and GT 1@[3,20) by 3
  (IoU 3/20): the most-overlapping one counts, 0.15 (not the larger IoU); 3@[6,20) misses GT 3@[2,3): 0.
  Mean over the 5 predicted segments: (0.5 + 2/7 + 0 + 0.15 + 0) / 5.
  """
  gt = [np.array([1, 1, 1, 1, 2, 2, 2, 2, 2, 0]), np.array([1, 1, 3] + [1] * 17)]
  pred = [np.array([1, 1, 2, 2, 2, 2, 1, 1, 0, 0]), np.array([1] * 6 + [3] * 14)]
  scores = segmentation.segmentation_scores(gt, pred, background_ids=[0])
  assert scores["iou_pred"] == pytest.approx(100 * (0.5 + 2 / 7 + 0.15) / 5)
  half = (segmentation.segmentation_counts(gt[:1], pred[:1], background_ids=[0])
          + segmentation.segmentation_counts(gt[1:], pred[1:], background_ids=[0]))
  assert half.scores()["iou_pred"] == pytest.approx(scores["iou_pred"])
