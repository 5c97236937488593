"""Tests of hal_jax.data.localization_formats: bad input, round trips, and the real sets in third_party/."""

import collections
import json
import os
import pathlib

import numpy as np
import pytest

from hal_jax.data import localization_formats as df
from hal_jax.data import hierarchy_formats as hf
from hal_jax.data import formats
from tests.data.data_errors import assert_data_error

THIRD_PARTY = pathlib.Path(__file__).resolve().parents[2] / "third_party"

GROUND_TRUTH = {
    "a": df.DetectionVideo("a", "validation", 10.0, (df.DetectionAnnotation((1.0, 2.5), "Jump"),
                                                     df.DetectionAnnotation((4.0, 4.0), "Run"))),
    "b": df.DetectionVideo("b", "test", 20.5, (df.DetectionAnnotation((0.0, 20.0), "Run"),)),
    "c": df.DetectionVideo("c", "test", 3.0, ()),
}


def write_json(path, data):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data))
  return path


def write_text(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def gt_with(video_entry):
  return {"version": "x", "database": {"v": video_entry}}


# ----------------------------------------------------------------------------------------------------------------------
# Ground truth JSON.


def test_ground_truth_round_trip(tmp_path):
  path = tmp_path / "gt.json"
  df.write_detection_ground_truth(path, GROUND_TRUTH)
  assert df.read_detection_ground_truth(path) == GROUND_TRUTH
  data = json.loads(path.read_text())
  assert data["version"] == "hal_jax" and data["taxonomy"] == []


def test_ground_truth_keeps_float_precision(tmp_path):
  path = tmp_path / "gt.json"
  videos = {"v": df.DetectionVideo("v", "s", 0.1 + 0.2, (df.DetectionAnnotation((1 / 3, 2 / 3), "x"),))}
  df.write_detection_ground_truth(path, videos)
  assert df.read_detection_ground_truth(path) == videos


def test_ground_truth_invalid_json(tmp_path):
  path = write_text(tmp_path / "gt.json", '{"database": {\n"v": }')
  assert_data_error(lambda: df.read_detection_ground_truth(path), path, "invalid JSON at line 2")


def test_ground_truth_missing_file(tmp_path):
  assert_data_error(lambda: df.read_detection_ground_truth(tmp_path / "gt.json"), tmp_path / "gt.json",
                    "file not found")


@pytest.mark.parametrize("data, fragment", [
    ([1, 2], "top level: expected a JSON object, got list"),
    ({"version": "x", "results": {}}, "top level: missing key 'database'"),
    ({"database": []}, "database: expected a JSON object"),
    (gt_with({"duration": 3.0, "annotations": []}), "video 'v': missing key 'subset'"),
    (gt_with({"subset": "test", "annotations": []}), "video 'v': missing key 'duration'"),
    (gt_with({"subset": "test", "duration": 3.0}), "video 'v': missing key 'annotations'"),
    (gt_with({"subset": "test", "duration": "3", "annotations": []}), "duration: expected a number, got '3'"),
    (gt_with({"subset": "test", "duration": 0, "annotations": []}), "duration must be > 0"),
    (gt_with({"subset": "", "duration": 3, "annotations": []}), "subset must be a non-empty string"),
    (gt_with({"subset": "test", "duration": 3, "annotations": {}}), "annotations must be a list"),
    (gt_with({"subset": "test", "duration": 3, "annotations": [{"segment": [1, 2]}]}),
     "video 'v' annotation 0: missing key 'label'"),
    (gt_with({"subset": "test", "duration": 3, "annotations": [{"segment": [1, 2], "label": 7}]}),
     "label must be a non-empty string"),
    (gt_with({"subset": "test", "duration": 3, "annotations": [{"segment": [1, 2, 3], "label": "x"}]}),
     "video 'v' annotation 0: segment must be a pair [start, end], got [1, 2, 3]"),
    (gt_with({"subset": "test", "duration": 3, "annotations": [{"segment": 1.5, "label": "x"}]}),
     "segment must be a pair"),
    (gt_with({"subset": "test", "duration": 3, "annotations": [{"segment": ["1", 2], "label": "x"}]}),
     "segment start: expected a number, got '1'"),
    (gt_with({"subset": "test", "duration": 3, "annotations": [{"segment": [2, 1], "label": "x"}]}),
     "segment end 1.0 < start 2.0"),
    (gt_with({"subset": "test", "duration": 3, "annotations": [{"segment": [-1, 1], "label": "x"}]}),
     "segment start -1.0 < 0"),
    ({"database": {"../v": {"subset": "test", "duration": 3, "annotations": []}}}, "invalid video name '../v'"),
])
def test_ground_truth_bad(tmp_path, data, fragment):
  path = write_json(tmp_path / "gt.json", data)
  assert_data_error(lambda: df.read_detection_ground_truth(path), path, fragment)


def test_ground_truth_duplicate_video_key(tmp_path):
  entry = '{"subset": "s", "duration": 1, "annotations": []}'
  path = write_text(tmp_path / "gt.json", f'{{"database": {{"v": {entry}, "w": {entry}, "v": {entry}}}}}')
  assert_data_error(lambda: df.read_detection_ground_truth(path), path, "duplicate JSON key 'v'")


def test_ground_truth_non_finite_duration(tmp_path):
  path = write_text(tmp_path / "gt.json", '{"database": {"v": {"subset": "s", "duration": NaN, "annotations": []}}}')
  assert_data_error(lambda: df.read_detection_ground_truth(path), path, "duration: non-finite number nan")


def test_ground_truth_segment_after_duration_needs_strict_bounds(tmp_path):
  path = write_json(tmp_path / "gt.json", gt_with(
      {"subset": "test", "duration": 3, "annotations": [{"segment": [2, 3.5], "label": "x"}]}))
  assert df.read_detection_ground_truth(path)["v"].annotations[0].segment == (2.0, 3.5)
  assert_data_error(lambda: df.read_detection_ground_truth(path, strict_bounds=True), path,
                    "ends after the duration 3.0 (strict_bounds=True)")


def test_ground_truth_label_not_in_class_list(tmp_path):
  path = tmp_path / "gt.json"
  df.write_detection_ground_truth(path, GROUND_TRUTH)
  assert_data_error(lambda: df.read_detection_ground_truth(path, label_map=formats.LabelMap(("Jump",))), path,
                    "video 'a' annotation 1: label 'Run' is not in the class list")


def test_ground_truth_labels_sort_numerically():
  videos = {"v": df.DetectionVideo("v", "s", 1.0, tuple(df.DetectionAnnotation((0, 1), l) for l in "10 2 1".split()))}
  assert df.ground_truth_labels(videos) == ["1", "2", "10"]
  assert df.ground_truth_labels(GROUND_TRUTH) == ["Jump", "Run"]


# ----------------------------------------------------------------------------------------------------------------------
# Prediction JSON.

PREDICTIONS = {"a": [df.Detection("Jump", 0.9, (1.0, 2.0)), df.Detection("Run", 0.25, (3.0, 5.5))],
               "b": [df.Detection("Run", 0.5, (0.0, 1.0))]}


def test_predictions_round_trip(tmp_path):
  path = tmp_path / "pred.json"
  df.write_detection_predictions(path, PREDICTIONS)
  assert df.read_detection_predictions(path) == PREDICTIONS
  assert df.read_detection_predictions(path, GROUND_TRUTH) == PREDICTIONS
  assert set(json.loads(path.read_text())) == {"version", "results", "external_data"}


def test_predictions_subset_drops_other_subsets(tmp_path):
  path = tmp_path / "pred.json"
  df.write_detection_predictions(path, PREDICTIONS)
  assert df.read_detection_predictions(path, GROUND_TRUTH, subset="test") == {"b": PREDICTIONS["b"]}
  with pytest.raises(ValueError, match="subset needs ground_truth"):
    df.read_detection_predictions(path, subset="test")


def test_predictions_unknown_video(tmp_path):
  path = tmp_path / "pred.json"
  df.write_detection_predictions(path, {"zzz": [df.Detection("Run", 0.5, (0.0, 1.0))]})
  assert df.read_detection_predictions(path) == {"zzz": [df.Detection("Run", 0.5, (0.0, 1.0))]}
  assert_data_error(lambda: df.read_detection_predictions(path, GROUND_TRUTH), path,
                    "video 'zzz' is not in the ground truth")


def test_predictions_unknown_class(tmp_path):
  path = tmp_path / "pred.json"
  df.write_detection_predictions(path, {"a": [df.Detection("Swim", 0.5, (0.0, 1.0))]})
  assert_data_error(lambda: df.read_detection_predictions(path, GROUND_TRUTH), path,
                    "video 'a' detection 0: class 'Swim' is not in the ground truth")
  assert_data_error(lambda: df.read_detection_predictions(path, label_map=formats.LabelMap(("Run",))), path,
                    "class 'Swim'")


def pred_with(detection):
  return {"results": {"a": [detection]}}


@pytest.mark.parametrize("data, fragment", [
    ({"database": {}}, "top level: missing key 'results'"),
    ({"results": []}, "results: expected a JSON object, got list"),
    ({"results": {"a": {}}}, "video 'a': expected a list of detections"),
    (pred_with({"label": "Run", "score": "high", "segment": [0, 1]}),
     "video 'a' detection 0: score: expected a number, got 'high'"),
    (pred_with({"label": "Run", "score": True, "segment": [0, 1]}), "score: expected a number, got True"),
    (pred_with({"label": "Run", "score": 0.5, "segment": [0]}), "segment must be a pair [start, end], got [0]"),
    (pred_with({"label": "Run", "score": 0.5, "segment": [3, 1]}), "segment end 1.0 < start 3.0"),
    (pred_with({"label": "Run", "segment": [0, 1]}), "missing key 'score'"),
    (pred_with({"score": 0.5, "segment": [0, 1]}), "missing key 'label'"),
    (pred_with([0.5]), "video 'a' detection 0: expected a JSON object"),
])
def test_predictions_bad(tmp_path, data, fragment):
  path = write_json(tmp_path / "pred.json", data)
  assert_data_error(lambda: df.read_detection_predictions(path), path, fragment)


def test_predictions_nan_score(tmp_path):
  path = write_text(tmp_path / "pred.json", '{"results": {"a": [{"label": "x", "score": NaN, "segment": [0, 1]}]}}')
  assert_data_error(lambda: df.read_detection_predictions(path), path, "score: non-finite number nan")


def test_writers_refuse_nan(tmp_path):
  path = tmp_path / "pred.json"
  with pytest.raises(ValueError):
    df.write_detection_predictions(path, {"a": [df.Detection("x", float("nan"), (0.0, 1.0))]})
  assert not os.listdir(tmp_path)  # Nothing half-written.


# ----------------------------------------------------------------------------------------------------------------------
# Hierarchy.


def make_hierarchy(root):
  fine_to_coarse = {0: 0, 1: 1, 2: 1}
  videos = (
      hf.HierarchicalVideo("x", 0, "train", 1.5, (hf.HierarchicalSegment(0.5, 2.0, 1, 2),
                                                  hf.HierarchicalSegment(3.0, 3.0, 0, 0))),
      hf.HierarchicalVideo("y", 1, "test", 0.1 + 0.2, ()),
      hf.HierarchicalVideo("z", 2, "test", 2.0, (hf.HierarchicalSegment(1.0, 0.5, 1, 1),)),
  )
  annotations = hf.HierarchicalAnnotations(os.fspath(root), videos, fine_to_coarse, None, None)
  hf.write_hierarchical_annotations(root, annotations)
  return annotations


def test_hierarchy_round_trip(tmp_path):
  annotations = make_hierarchy(tmp_path)
  loaded = hf.load_hierarchical_annotations(tmp_path)
  assert loaded == annotations
  assert (loaded.num_fine, loaded.num_coarse) == (3, 2)
  # end_s <= start_s rows are kept as in the source (FineAction has 65).
  assert loaded.videos[2].segments[0] == hf.HierarchicalSegment(1.0, 0.5, 1, 1)


def test_hierarchy_class_names(tmp_path):
  make_hierarchy(tmp_path)
  write_text(tmp_path / "fine_classes.tsv", "fine_label\tcoarse_label\tset_id\tglabel\tname\n"
             "0\t0\t1\t1\tvault a\n1\t1\t2\t5\tsalto\n2\t1\t2\t6\tturn\n")
  write_text(tmp_path / "coarse_classes.tsv", "coarse_label\tset_id\tname\n0\t1\tvault\n1\t2\tfloor\n")
  loaded = hf.load_hierarchical_annotations(tmp_path)
  assert loaded.fine_names == ("vault a", "salto", "turn") and loaded.coarse_names == ("vault", "floor")


def test_hierarchy_fine_classes_disagree_with_fine_to_coarse(tmp_path):
  make_hierarchy(tmp_path)
  path = write_text(tmp_path / "fine_classes.tsv", "fine_label\tcoarse_label\tset_id\tglabel\tname\n"
                    "0\t0\t1\t1\ta\n1\t0\t2\t5\tb\n2\t1\t2\t6\tc\n")
  assert_data_error(lambda: hf.load_hierarchical_annotations(tmp_path), path, "differs from fine_to_coarse.json")


def test_hierarchy_duplicate_fine_name_within_a_coarse_class(tmp_path):
  path = write_text(tmp_path / "fine_classes.tsv", "fine_label\tcoarse_label\tset_id\tglabel\tname\n"
                    "0\t0\t1\t1\ta\n1\t1\t2\t5\ta\n2\t1\t2\t6\ta\n")
  assert_data_error(lambda: hf.read_fine_classes(path), path, "line 4: duplicate class name 'a' in coarse class 1")


def test_hierarchy_coarse_class_count(tmp_path):
  make_hierarchy(tmp_path)
  path = write_text(tmp_path / "coarse_classes.tsv", "coarse_label\tset_id\tname\n0\t1\tvault\n")
  assert_data_error(lambda: hf.load_hierarchical_annotations(tmp_path), path, "1 coarse classes but")


@pytest.mark.parametrize("data, fragment", [
    ({"0": 0, "x": 1}, "key 'x' is not a fine class id"),
    ({"0": 0, "1": "1"}, "fine class 1: coarse id must be a non-negative integer, got '1'"),
    ({"0": 0, "2": 1}, "fine class ids must be 0..1; missing [1]"),
    ({"0": 0, "1": 2}, "unused [1]"),
    ({}, "no classes"),
])
def test_fine_to_coarse_bad(tmp_path, data, fragment):
  path = write_json(tmp_path / "fine_to_coarse.json", data)
  assert_data_error(lambda: hf.read_fine_to_coarse(path), path, fragment)


def test_fine_to_coarse_round_trip(tmp_path):
  hf.write_fine_to_coarse(tmp_path / "f.json", {1: 0, 0: 1, 2: 0})
  assert hf.read_fine_to_coarse(tmp_path / "f.json") == {0: 1, 1: 0, 2: 0}


HEADER = "video\tstart_s\tend_s\tcoarse_label\tfine_label\n"


@pytest.mark.parametrize("text, fragment", [
    ("video start_s end_s coarse_label fine_label\n", "expected the header"),
    (HEADER + "x\t0.5\t2.0\t1\n", "line 2: expected 5 tab-separated fields"),
    (HEADER + "x\t0.5\tlate\t1\t2\n", "line 2: end_s must be a number, got 'late'"),
    (HEADER + "x\t0.5\tinf\t1\t2\n", "line 2: end_s is not finite"),
    (HEADER + "x\t-0.5\t2\t1\t2\n", "line 2: start_s -0.5 < 0"),
    (HEADER + "x\t0.5\t2.0\t1\t2.5\n", "line 2: fine_label must be an integer, got '2.5'"),
    (HEADER + "x\t0.5\t2.0\t0\t2\n", "line 2: coarse_label 0 but fine_to_coarse.json maps fine_label 2 to 1"),
    (HEADER + "x\t0.5\t2.0\t1\t7\n", "line 2: fine_label 7 is not in fine_to_coarse.json"),
])
def test_hierarchical_segments_bad(tmp_path, text, fragment):
  path = write_text(tmp_path / "segments.tsv", text)
  assert_data_error(lambda: hf.read_hierarchical_segments(path, {0: 0, 1: 1, 2: 1}), path, fragment)


VIDEOS_HEADER = "index\tvideo\tsubset\tsec2clip_ratio\tnum_segments\n"


@pytest.mark.parametrize("rows, fragment", [
    ("0\tx\ttrain\t1.5\t2\n1\ty\ttest\t0.3\t1\n2\tz\ttest\t2.0\t1\n", "line 3: video 'y' has num_segments 1"),
    ("0\tx\ttrain\t1.5\t2\n2\ty\ttest\t0.3\t0\n", "line 3: index 2 out of order (expected 1)"),
    ("0\tx\ttrain\t0\t2\n", "line 2: sec2clip_ratio must be > 0"),
    ("0\tx\ttrain\t1.5\t2\n1\tx\ttest\t0.3\t2\n", "line 3: duplicate video 'x'"),
    ("0\tx\t\t1.5\t2\n", "line 2: empty subset"),
    ("0\tx\ttrain\t1.5\t2\n1\ty\ttest\t0.3\t0\n", None),  # z is missing.
])
def test_hierarchical_videos_bad(tmp_path, rows, fragment):
  make_hierarchy(tmp_path)
  path = write_text(tmp_path / "videos.tsv", VIDEOS_HEADER + rows)
  if fragment is None:
    assert_data_error(lambda: hf.load_hierarchical_annotations(tmp_path), tmp_path / "segments.tsv",
                      "1 videos are not in videos.tsv, e.g. 'z'")
  else:
    assert_data_error(lambda: hf.load_hierarchical_annotations(tmp_path), path, fragment)


# ----------------------------------------------------------------------------------------------------------------------
# Localization feature directory.


def make_localization(root, *, classes=True, fine_to_coarse=True):
  rng = np.random.default_rng(0)
  df.write_detection_ground_truth(root / "gt.json", GROUND_TRUTH)
  infos = []
  for i, (name, video) in enumerate(GROUND_TRUTH.items()):
    num_features = 5 + i
    formats.write_features(root / "features" / f"{name}.npy", rng.normal(size=[num_features, 3]), "TD")
    infos.append(df.VideoInfo(name, video.subset, video.duration, num_features / video.duration, num_features))
  df.write_video_info(root / "video_info.tsv", infos)
  if classes:
    formats.write_mapping(root / "classes.txt", formats.LabelMap(("Run", "Jump")))
  if fine_to_coarse:
    hf.write_fine_to_coarse(root / "fine_to_coarse.json", {0: 0, 1: 0})
  return root


def test_localization_round_trip(tmp_path):
  root = make_localization(tmp_path)
  assert df.read_video_info(root / "video_info.tsv")["b"] == df.VideoInfo("b", "test", 20.5, 6 / 20.5, 6)
  dataset = df.load_localization_split(root, "test", feature_dim=3)
  assert dataset.label_map.names == ("Run", "Jump") and dataset.fine_to_coarse == {0: 0, 1: 0}
  assert [v.name for v in dataset.videos] == ["b", "c"]
  b = dataset.videos[0]
  np.testing.assert_array_equal(b.features, np.load(root / "features" / "b.npy"))
  assert b.features.shape == (6, 3) and b.feature_fps == 6 / 20.5
  np.testing.assert_array_equal(b.segments, [[0.0, 20.0]])
  np.testing.assert_array_equal(b.labels, [0])
  assert dataset.videos[1].segments.shape == (0, 2) and dataset.videos[1].labels.shape == (0,)
  a = df.load_localization_split(root, "validation").videos[0]
  np.testing.assert_array_equal(a.labels, [1, 0])


def test_localization_without_class_list_sorts_gt_labels(tmp_path):
  root = make_localization(tmp_path, classes=False, fine_to_coarse=False)
  dataset = df.load_localization_split(root, "validation")
  assert dataset.label_map.names == ("Jump", "Run") and dataset.fine_to_coarse is None
  np.testing.assert_array_equal(dataset.videos[0].labels, [0, 1])


def test_localization_videos_argument(tmp_path):
  root = make_localization(tmp_path)
  assert [v.name for v in df.load_localization_split(root, "test", videos=["c"]).videos] == ["c"]
  assert_data_error(lambda: df.load_localization_split(root, "test", videos=["a"]), root / "gt.json",
                    "video 'a' is not in subset 'test'")


def test_localization_unknown_subset(tmp_path):
  root = make_localization(tmp_path)
  assert_data_error(lambda: df.load_localization_split(root, "training"), root / "gt.json",
                    "no videos of subset 'training' (subsets: ['test', 'validation'])")


def test_localization_missing_features(tmp_path):
  root = make_localization(tmp_path)
  (root / "features" / "c.npy").unlink()
  assert_data_error(lambda: df.load_localization_split(root, "test"), root / "features" / "c.npy",
                    "video 'c' of subset 'test' has no features")


def test_localization_num_features_mismatch(tmp_path):
  root = make_localization(tmp_path)
  formats.write_features(root / "features" / "c.npy", np.zeros([9, 3]), "TD")
  assert_data_error(lambda: df.load_localization_split(root, "test"), root / "features" / "c.npy",
                    "9 feature steps but", "num_features 7")


def test_localization_feature_dim(tmp_path):
  root = make_localization(tmp_path)
  assert_data_error(lambda: df.load_localization_split(root, "test", feature_dim=4), root / "features" / "b.npy",
                    "feature dimension: expected 4, found 3")


def test_localization_video_info_disagrees(tmp_path):
  root = make_localization(tmp_path)
  df.write_video_info(root / "video_info.tsv", [df.VideoInfo("b", "test", 21.0, 1.0, 6)])
  assert_data_error(lambda: df.load_localization_split(root, "test"), root / "video_info.tsv",
                    "video 'b': subset/duration (test, 21.0) differ from gt.json (test, 20.5)")
  df.write_video_info(root / "video_info.tsv", [df.VideoInfo("b", "test", 20.5, 1.0, 6)])
  assert_data_error(lambda: df.load_localization_split(root, "test"), root / "video_info.tsv",
                    "video 'c' of", "has no row")


@pytest.mark.parametrize("rows, fragment", [
    ("b\ttest\t20.5\t1.0\t0\n", "line 2: num_features must be >= 1"),
    ("b\ttest\t20.5\t-1\t6\n", "line 2: duration_s and feature_fps must be > 0"),
    ("b\ttest\t20.5\t1.0\t6\nb\ttest\t20.5\t1.0\t6\n", "line 3: duplicate video 'b'"),
])
def test_video_info_bad(tmp_path, rows, fragment):
  path = write_text(tmp_path / "video_info.tsv", "video\tsubset\tduration_s\tfeature_fps\tnum_features\n" + rows)
  assert_data_error(lambda: df.read_video_info(path), path, fragment)


def test_localization_fine_to_coarse_size(tmp_path):
  root = make_localization(tmp_path)
  hf.write_fine_to_coarse(root / "fine_to_coarse.json", {0: 0, 1: 0, 2: 1})
  assert_data_error(lambda: df.load_localization_split(root, "test"), root / "fine_to_coarse.json",
                    "3 fine classes but the label map has 2")


def test_localization_label_not_in_classes(tmp_path):
  root = make_localization(tmp_path)
  formats.write_mapping(root / "classes.txt", formats.LabelMap(("Run",)))
  assert_data_error(lambda: df.load_localization_split(root, "test"), root / "gt.json",
                    "label 'Jump' is not in the class list")


# ----------------------------------------------------------------------------------------------------------------------
# Real annotation sets (third_party/): each big file is parsed once per module.


@pytest.fixture(scope="module")
def thumos():
  classes = formats.read_mapping(THIRD_PARTY / "thumos14" / "classes.txt")
  return classes, df.read_detection_ground_truth(THIRD_PARTY / "thumos14" / "gt.json", label_map=classes)


@pytest.fixture(scope="module")
def activitynet():
  classes = formats.read_mapping(THIRD_PARTY / "activitynet13" / "classes.txt")
  return classes, df.read_detection_ground_truth(THIRD_PARTY / "activitynet13" / "gt.json", label_map=classes)


def count_by_subset(ground_truth):
  videos, instances = collections.Counter(), collections.Counter()
  for video in ground_truth.values():
    videos[video.subset] += 1
    instances[video.subset] += len(video.annotations)
  return videos, instances


def test_thumos14_counts(thumos):
  classes, gt = thumos
  assert classes.num_classes == 20 and classes.names[0] == "BaseballPitch"
  videos, instances = count_by_subset(gt)
  assert len(gt) == 412 and videos == {"validation": 200, "test": 212}
  assert instances == {"validation": 3007, "test": 3358}
  per_class = collections.Counter(a.label for v in gt.values() for a in v.annotations)
  assert per_class["Diving"] == 887 and per_class["GolfSwing"] == 67 and len(per_class) == 20
  train = formats.read_split_list(THIRD_PARTY / "thumos14" / "splits" / "train.txt")
  test = formats.read_split_list(THIRD_PARTY / "thumos14" / "splits" / "test.txt")
  assert len(train) == 200 and all(gt[v].subset == "validation" for v in train)
  assert len(test) == 210 and all(gt[v].subset == "test" for v in test)
  assert {v for v in gt if gt[v].subset == "test"} - set(test) == {"video_test_0000270", "video_test_0001496"}


def test_thumos14_segments_after_duration_kept_unless_strict(thumos):
  _, gt = thumos
  assert sum(a.segment[1] > v.duration for v in gt.values() for a in v.annotations) == 92
  path = THIRD_PARTY / "thumos14" / "gt.json"
  assert_data_error(lambda: df.read_detection_ground_truth(path, strict_bounds=True), path,
                    "ends after the duration")


def test_thumos14_predictions_check_against_ground_truth(tmp_path, thumos):
  _, gt = thumos
  path = tmp_path / "pred.json"
  df.write_detection_predictions(path, {"video_test_0000004": [df.Detection("CricketShot", 0.7, (1.0, 2.0))],
                                        "video_validation_0000051": [df.Detection("Diving", 0.1, (0.0, 1.0))]})
  assert list(df.read_detection_predictions(path, gt, subset="test")) == ["video_test_0000004"]


def test_activitynet13_counts(activitynet):
  classes, gt = activitynet
  assert classes.num_classes == 200 and classes.names[0] == "Applying sunscreen"
  videos, instances = count_by_subset(gt)
  assert len(gt) == 14377 and videos == {"training": 9649, "validation": 4728}
  assert sum(instances.values()) == 22152 and instances == {"training": 14859, "validation": 7293}
  assert len({a.label for v in gt.values() for a in v.annotations}) == 200
  zero_length = [(name, v.subset) for name, v in gt.items() for a in v.annotations if a.segment[0] == a.segment[1]]
  assert len(zero_length) == 12
  assert {n for n, s in zero_length if s == "validation"} == {"6kgJx6ahgq0", "QhiKgeJV3k0", "e6J_ygZ779A"}


@pytest.fixture(scope="module")
def finegym():
  return hf.load_hierarchical_annotations(THIRD_PARTY / "finegym")


@pytest.fixture(scope="module")
def fineaction():
  return hf.load_hierarchical_annotations(THIRD_PARTY / "fineaction")


def hierarchy_counts(annotations):
  videos, instances = collections.Counter(), collections.Counter()
  for video in annotations.videos:
    videos[video.subset] += 1
    instances[video.subset] += len(video.segments)
  return videos, instances


def test_finegym_counts(finegym):
  videos, instances = hierarchy_counts(finegym)
  assert videos == {"train": 3775, "test": 1193} and instances == {"train": 26866, "test": 7975}
  assert sum(instances.values()) == 34841
  assert (finegym.num_fine, finegym.num_coarse) == (99, 14)
  assert len(finegym.fine_names) == 99 and finegym.coarse_names[0] == "vault"
  assert finegym.fine_names[58] == finegym.fine_names[70] == "(BB) salto backward tucked"
  assert {s.fine_label for v in finegym.videos for s in v.segments} == set(range(99))
  assert {v.sec2clip_ratio for v in finegym.videos} == {1.5}


def test_fineaction_counts(fineaction):
  videos, instances = hierarchy_counts(fineaction)
  assert videos == {"train": 8440, "test": 4174} and instances == {"train": 57752, "test": 24236}
  assert sum(instances.values()) == 81988
  assert (fineaction.num_fine, fineaction.num_coarse) == (106, 14)
  assert fineaction.fine_names is None and fineaction.coarse_names is None
  assert sum(s.end_s <= s.start_s for v in fineaction.videos for s in v.segments) == 65
  assert {s.fine_label for v in fineaction.videos for s in v.segments} == set(range(106))


def test_fineaction_round_trip_is_bit_identical(tmp_path, fineaction):
  hf.write_hierarchical_annotations(tmp_path, fineaction)
  for name in ("videos.tsv", "segments.tsv"):
    assert (tmp_path / name).read_bytes() == (THIRD_PARTY / "fineaction" / name).read_bytes(), name
  assert json.loads((tmp_path / "fine_to_coarse.json").read_text()) == json.loads(
      (THIRD_PARTY / "fineaction" / "fine_to_coarse.json").read_text())
