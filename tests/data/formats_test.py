"""Tests of hal_jax.data.formats: bad input, round trips, and the real annotation sets in third_party/."""

import collections
import os
import pathlib

import numpy as np
import pytest

from hal_jax.data import formats
from hal_jax.data import segmentation_formats
from hal_jax.errors import ConfigError
from tests.data.data_errors import assert_data_error

THIRD_PARTY = pathlib.Path(__file__).resolve().parents[2] / "third_party"
LABELS = formats.LabelMap(("SIL", "take cup", "pour"))


def write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def make_dataset(root, videos, *, layout="DT", dim=4, transcripts=True, split="train"):
  """An MS-TCN directory: `videos` maps name -> label names; features are random [T, dim]."""
  rng = np.random.default_rng(0)
  formats.write_mapping(root / "mapping.txt", LABELS)
  for name, names in videos.items():
    segmentation_formats.write_mstcn_video(root, name, rng.normal(size=[len(names), dim]), names, layout=layout,
                              write_transcript=transcripts)
  formats.write_split_list(segmentation_formats.split_path(root, split, 1), list(videos))
  return root


VIDEOS = {"v1": ["SIL"] * 3 + ["take cup"] * 4 + ["SIL"] * 2, "v2": ["pour"] * 5 + ["SIL"]}


# ----------------------------------------------------------------------------------------------------------------------
# mapping.txt


def test_mapping_round_trip_keeps_names_with_spaces(tmp_path):
  path = tmp_path / "mapping.txt"
  formats.write_mapping(path, LABELS)
  label_map = formats.read_mapping(path)
  assert label_map == LABELS
  assert label_map.num_classes == 3
  assert label_map.index("take cup", path) == 1
  np.testing.assert_array_equal(label_map.ids(["pour", "SIL", "pour"], path), [2, 0, 2])
  assert label_map.ids(["pour"], path).dtype == np.int32


def test_mapping_missing_file(tmp_path):
  assert_data_error(lambda: formats.read_mapping(tmp_path / "mapping.txt"), tmp_path / "mapping.txt",
                    "file not found")


@pytest.mark.parametrize("text, fragment", [
    ("0 a\nb\n", "line 2: expected '<id> <name>'"),
    ("0 a\nx b\n", "line 2: expected '<id> <name>'"),
    ("0 a\n0 b\n", "line 2: duplicate id 0"),
    ("0 a\n2 b\n", "line 2: id 2 skips id 1"),
    ("0 a\n1 b\n2 a\n", "line 3: duplicate label 'a' (first on line 1)"),
    ("\n\n", "no classes"),
])
def test_mapping_malformed(tmp_path, text, fragment):
  path = write(tmp_path / "mapping.txt", text)
  assert_data_error(lambda: formats.read_mapping(path), path, fragment)


def test_mapping_not_utf8(tmp_path):
  path = tmp_path / "mapping.txt"
  path.write_bytes(b"0 caf\xe9\n")
  assert_data_error(lambda: formats.read_mapping(path), path, "not UTF-8")


def test_label_not_in_mapping():
  error = assert_data_error(lambda: LABELS.index("stir", "gt.txt"), "gt.txt", "label 'stir' is not in mapping.txt")
  assert str(error) == "gt.txt: label 'stir' is not in mapping.txt"


# ----------------------------------------------------------------------------------------------------------------------
# Split lists, frame labels, transcripts.


def test_split_list_strips_txt_suffix_and_blank_lines(tmp_path):
  path = write(tmp_path / "train.split1.bundle", "a.txt\n\nb\n  \n")
  assert formats.read_split_list(path) == ["a", "b"]
  formats.write_split_list(path, ["x", "y"])
  assert formats.read_split_list(path) == ["x", "y"]


@pytest.mark.parametrize("text, fragment", [
    ("a\nb\na.txt\n", "line 3: duplicate video 'a' (first on line 1)"),
    ("a\n../etc/passwd\n", "line 2: invalid video name '../etc/passwd'"),
])
def test_split_list_bad(tmp_path, text, fragment):
  path = write(tmp_path / "test.split1.bundle", text)
  assert_data_error(lambda: formats.read_split_list(path), path, fragment)


def test_frame_labels_round_trip(tmp_path):
  path = tmp_path / "gt.txt"
  segmentation_formats.write_frame_labels(path, ["SIL", "SIL", "take cup", "pour"])
  labels = segmentation_formats.read_frame_labels(path, LABELS)
  np.testing.assert_array_equal(labels, [0, 0, 1, 2])
  assert labels.dtype == np.int32


def test_frame_labels_unknown_label_names_line(tmp_path):
  path = write(tmp_path / "gt.txt", "SIL\nSIL\nstir\n")
  assert_data_error(lambda: segmentation_formats.read_frame_labels(path, LABELS), path,
                    "line 3: label 'stir' is not in mapping.txt")


def test_frame_labels_empty_file(tmp_path):
  path = write(tmp_path / "gt.txt", "\n")
  assert_data_error(lambda: segmentation_formats.read_frame_labels(path, LABELS), path, "empty frame labels")


def test_frame_labels_blank_line_inside(tmp_path):
  path = write(tmp_path / "gt.txt", "SIL\n\npour\n")
  assert_data_error(lambda: segmentation_formats.read_frame_labels(path, LABELS), path, "line 2: empty line")


def test_transcript_round_trip_collapses_repeats(tmp_path):
  path = tmp_path / "t.txt"
  segmentation_formats.write_transcript(path, ["SIL", "pour", "pour", "SIL"])
  np.testing.assert_array_equal(segmentation_formats.read_transcript(path, LABELS), [0, 2, 0])


def test_transcript_empty(tmp_path):
  path = write(tmp_path / "t.txt", "")
  assert_data_error(lambda: segmentation_formats.read_transcript(path, LABELS), path, "empty transcript")


# ----------------------------------------------------------------------------------------------------------------------
# Features.


@pytest.mark.parametrize("layout", ["DT", "TD"])
def test_features_round_trip(tmp_path, layout):
  path = tmp_path / "f.npy"
  features = np.arange(12, dtype=np.float32).reshape(4, 3)  # [T=4, D=3]
  formats.write_features(path, features, layout)
  stored = np.load(path)
  assert stored.shape == ((3, 4) if layout == "DT" else (4, 3))
  np.testing.assert_array_equal(formats.read_features(path, layout, feature_dim=3), features)


def test_features_float64_becomes_float32(tmp_path):
  path = tmp_path / "f.npy"
  np.save(path, np.ones([3, 5], np.float64))
  features = formats.read_features(path, "DT")
  assert features.dtype == np.float32 and features.shape == (5, 3)


def test_features_missing(tmp_path):
  assert_data_error(lambda: formats.read_features(tmp_path / "f.npy"), tmp_path / "f.npy", "not found")


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_features_wrong_rank(tmp_path, shape):
  path = tmp_path / "f.npy"
  np.save(path, np.zeros(shape, np.float32))
  assert_data_error(lambda: formats.read_features(path, "DT"), path, "expected a 2-D feature array [D, T]",
                    f"found shape {shape}")


def test_features_wrong_dim_hints_at_layout(tmp_path):
  path = tmp_path / "f.npy"
  np.save(path, np.zeros([10, 64], np.float32))  # [T, D] stored, but read as [D, T].
  error = assert_data_error(lambda: formats.read_features(path, "DT", feature_dim=64), path,
                            "feature dimension: expected 64, found 10")
  assert "feature_layout='TD'" in error.what


def test_features_wrong_dim_without_hint(tmp_path):
  path = tmp_path / "f.npy"
  np.save(path, np.zeros([8, 10], np.float32))
  error = assert_data_error(lambda: formats.read_features(path, "DT", feature_dim=64), path,
                            "expected 64, found 8")
  assert "the other axis" not in error.what


def test_features_non_finite(tmp_path):
  path = tmp_path / "f.npy"
  features = np.zeros([4, 6], np.float32)
  features[2, 3] = np.nan
  np.save(path, features)
  assert_data_error(lambda: formats.read_features(path, "DT"), path, "1 non-finite", "first at frame 3")


def test_features_overflowing_float32(tmp_path):
  path = tmp_path / "f.npy"
  np.save(path, np.full([2, 3], 1e300))
  assert_data_error(lambda: formats.read_features(path, "TD"), path, "non-finite")


def test_features_zero_length(tmp_path):
  path = tmp_path / "f.npy"
  np.save(path, np.zeros([16, 0], np.float32))
  assert_data_error(lambda: formats.read_features(path, "DT"), path, "empty feature array")


def test_features_truncated_file(tmp_path):
  path = tmp_path / "f.npy"
  np.save(path, np.zeros([64, 100], np.float32))
  path.write_bytes(path.read_bytes()[:1000])
  assert_data_error(lambda: formats.read_features(path), path, "cannot read .npy array")


@pytest.mark.parametrize("content", [b"not an array", b""])
def test_features_not_npy(tmp_path, content):
  path = tmp_path / "f.npy"
  path.write_bytes(content)
  assert_data_error(lambda: formats.read_features(path), path, "cannot read .npy array")


def test_features_pickled_objects_are_not_loaded(tmp_path):
  path = tmp_path / "f.npy"
  np.save(path, np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
  assert_data_error(lambda: formats.read_features(path), path, "cannot read .npy array")


def test_features_integer_dtype(tmp_path):
  path = tmp_path / "f.npy"
  np.save(path, np.zeros([3, 4], np.int64))
  assert_data_error(lambda: formats.read_features(path), path, "floating point", "int64")


def test_features_npz_archive(tmp_path):
  path = tmp_path / "f.npy"
  with open(path, "wb") as f:
    np.savez(f, a=np.zeros([3, 4]))
  assert_data_error(lambda: formats.read_features(path), path, ".npz archive")


def test_features_bad_layout_is_config_error(tmp_path):
  with pytest.raises(ConfigError, match="feature_layout"):
    formats.read_features(tmp_path / "f.npy", "NTC")


# ----------------------------------------------------------------------------------------------------------------------
# Frame labels <-> segments.


def test_labels_segments_round_trip():
  labels = np.array([0, 0, 2, 2, 2, 1, 0], np.int32)
  segments = segmentation_formats.labels_to_segments(labels)
  assert segments == [(0, 0, 2), (2, 2, 5), (1, 5, 6), (0, 6, 7)]
  np.testing.assert_array_equal(segmentation_formats.segments_to_labels(segments, 7), labels)
  np.testing.assert_array_equal(segmentation_formats.collapse_runs(labels), [0, 2, 1, 0])
  np.testing.assert_array_equal(segmentation_formats.segments_to_labels([(1, 1, 2)], 3), [-1, 1, -1])
  assert segmentation_formats.labels_to_segments(np.zeros([0], np.int32)) == []
  assert segmentation_formats.collapse_runs(np.zeros([0], np.int32)).shape == (0,)


def test_segments_to_labels_rejects_bad_segment():
  with pytest.raises(ValueError, match="outside"):
    segmentation_formats.segments_to_labels([(0, 2, 9)], 5)


def test_segment_rows_labels_round_trip():
  rows = [(0, 2, "SIL"), (2, 5, "take cup"), (5, 6, "SIL")]
  labels = segmentation_formats.segment_rows_to_labels(rows, LABELS, "segments.tsv")
  np.testing.assert_array_equal(labels, [0, 0, 1, 1, 1, 0])
  assert segmentation_formats.labels_to_segment_rows(labels, LABELS) == rows


# ----------------------------------------------------------------------------------------------------------------------
# segments.tsv


def test_segments_tsv_round_trip(tmp_path):
  path = tmp_path / "segments.tsv"
  segments = {"a": [(0, 3, "SIL"), (3, 7, "take cup")], "b": [(0, 1, "pour")]}
  segmentation_formats.write_segments_tsv(path, segments)
  assert segmentation_formats.read_segments_tsv(path) == segments


@pytest.mark.parametrize("rows, fragment", [
    ("a\t0\t3\tSIL\na\t3\tx\tpour\n", "line 3: expected 'video<TAB>start_frame<TAB>end_frame<TAB>label'"),
    ("a\t0\t3\n", "line 2: expected"),
    ("a\t1\t3\tSIL\n", "line 2: video 'a' segment starts at frame 1, expected 0"),
    ("a\t0\t3\tSIL\na\t4\t6\tpour\n", "line 3: video 'a' segment starts at frame 4, expected 3"),
    ("a\t0\t3\tSIL\na\t3\t3\tpour\n", "line 3: segment start 3 >= end 3"),
    ("a\t0\t3\tSIL\nb\t0\t3\tSIL\na\t3\t4\tpour\n", "line 4: rows of video 'a' are not consecutive"),
])
def test_segments_tsv_bad_rows(tmp_path, rows, fragment):
  path = write(tmp_path / "segments.tsv", "video\tstart_frame\tend_frame\tlabel\n" + rows)
  assert_data_error(lambda: segmentation_formats.read_segments_tsv(path), path, fragment)


def test_segments_tsv_bad_header(tmp_path):
  path = write(tmp_path / "segments.tsv", "video start end label\na\t0\t3\tSIL\n")
  assert_data_error(lambda: segmentation_formats.read_segments_tsv(path), path, "expected the header")


# ----------------------------------------------------------------------------------------------------------------------
# Atomic writes.


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "mapping.txt"
  formats.write_mapping(path, LABELS)
  with pytest.raises(RuntimeError):
    with formats.atomic_output(path) as f:
      f.write("half")
      raise RuntimeError("crash while writing")
  assert formats.read_mapping(path) == LABELS
  assert os.listdir(tmp_path) == ["mapping.txt"]


# ----------------------------------------------------------------------------------------------------------------------
# MS-TCN directory.


@pytest.mark.parametrize("layout", ["DT", "TD"])
def test_mstcn_round_trip(tmp_path, layout):
  root = make_dataset(tmp_path, VIDEOS, layout=layout)
  dataset = segmentation_formats.load_mstcn_split(root, "train", 1, feature_layout=layout, feature_dim=4)
  assert dataset.label_map == LABELS
  assert [v.name for v in dataset.videos] == ["v1", "v2"]
  v1 = dataset.videos[0]
  assert v1.features.shape == (9, 4) and v1.features.dtype == np.float32
  np.testing.assert_array_equal(v1.labels, [0, 0, 0, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(v1.transcript, [0, 1, 0])
  np.testing.assert_array_equal(dataset.videos[1].transcript, [2, 0])


def test_mstcn_transcripts_derived_when_absent(tmp_path):
  root = make_dataset(tmp_path, VIDEOS, transcripts=False)
  assert not (root / "transcripts").exists()
  dataset = segmentation_formats.load_mstcn_split(root, "train")
  np.testing.assert_array_equal(dataset.videos[0].transcript, [0, 1, 0])


def test_mstcn_videos_argument_replaces_split_list(tmp_path):
  root = make_dataset(tmp_path, VIDEOS)
  dataset = segmentation_formats.load_mstcn_split(root, "nosuchsplit", videos=["v2"])
  assert [v.name for v in dataset.videos] == ["v2"]


def test_mstcn_missing_root(tmp_path):
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(tmp_path / "nope", "train"), tmp_path / "nope",
                    "directory not found")


@pytest.mark.parametrize("directory", ["features", "groundTruth"])
def test_mstcn_missing_directory(tmp_path, directory):
  root = make_dataset(tmp_path, VIDEOS)
  (root / directory).rename(root / "moved")
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(root, "train"), root / directory,
                    f"{directory} directory not found")


def test_mstcn_missing_split_file(tmp_path):
  root = make_dataset(tmp_path, VIDEOS)
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(root, "test"),
                    segmentation_formats.split_path(root, "test", 1),
                    "file not found")


def test_mstcn_empty_split(tmp_path):
  root = make_dataset(tmp_path, VIDEOS)
  path = write(pathlib.Path(segmentation_formats.split_path(root, "train", 1)), "\n")
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(root, "train"), path, "no videos")


@pytest.mark.parametrize("directory, suffix, fragment", [
    ("features", ".npy", "has no features"),
    ("groundTruth", ".txt", "has no frame labels"),
    ("transcripts", ".txt", "has no transcript"),
])
def test_mstcn_video_without_file(tmp_path, directory, suffix, fragment):
  root = make_dataset(tmp_path, VIDEOS)
  (root / directory / f"v2{suffix}").unlink()
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(root, "train"), root / directory / f"v2{suffix}",
                    f"video 'v2' of {segmentation_formats.split_path(root, 'train', 1)} {fragment}")


def test_mstcn_label_not_in_mapping(tmp_path):
  root = make_dataset(tmp_path, VIDEOS)
  path = write(root / "groundTruth" / "v2.txt", "pour\n" * 5 + "stir\n")
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(root, "train"), path,
                    "line 6: label 'stir' is not in mapping.txt")


def test_mstcn_length_mismatch_beyond_tolerance(tmp_path):
  root = make_dataset(tmp_path, VIDEOS)
  formats.write_features(root / "features" / "v2.npy", np.zeros([9, 4]))  # 9 frames, 6 labels.
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(root, "train", length_tolerance=2),
                    root / "features" / "v2.npy", "9 feature frames", "has 6 frame labels",
                    "difference +3, length_tolerance=2")


def test_mstcn_longer_features_trimmed_within_tolerance(tmp_path):
  root = make_dataset(tmp_path, VIDEOS)
  features = np.arange(32, dtype=np.float32).reshape(8, 4)
  formats.write_features(root / "features" / "v2.npy", features)  # 8 frames, 6 labels.
  video = segmentation_formats.load_mstcn_split(root, "train", length_tolerance=2).videos[1]
  np.testing.assert_array_equal(video.features, features[:6])
  assert video.labels.shape == (6,)


def test_mstcn_longer_labels_trimmed_within_tolerance(tmp_path):
  root = make_dataset(tmp_path, VIDEOS)
  formats.write_features(root / "features" / "v1.npy", np.zeros([8, 4]))  # 8 frames, 9 labels (last is SIL).
  video = segmentation_formats.load_mstcn_split(root, "train", length_tolerance=1).videos[0]
  assert video.features.shape == (8, 4)
  np.testing.assert_array_equal(video.labels, [0, 0, 0, 1, 1, 1, 1, 0])


def test_mstcn_transcript_longer_than_video(tmp_path):
  root = make_dataset(tmp_path, VIDEOS)
  path = root / "transcripts" / "v2.txt"
  segmentation_formats.write_transcript(path, ["pour", "SIL", "pour", "SIL", "pour", "SIL", "pour"])
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(root, "train"), path,
                    "transcript has 7 actions but the video has only 6 frames")


def test_mstcn_feature_dim_versus_config(tmp_path):
  root = make_dataset(tmp_path, VIDEOS, dim=4)
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(root, "train", feature_dim=8),
                    root / "features" / "v1.npy",
                    "feature dimension: expected 8, found 4")


def test_mstcn_feature_dim_differs_between_videos(tmp_path):
  root = make_dataset(tmp_path, VIDEOS, dim=4)
  formats.write_features(root / "features" / "v2.npy", np.zeros([6, 5]))
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(root, "train"), root / "features" / "v2.npy",
                    "expected 4, found 5")


def test_mstcn_bad_options_are_config_errors(tmp_path):
  root = make_dataset(tmp_path, VIDEOS)
  with pytest.raises(ConfigError, match="feature_layout"):
    segmentation_formats.load_mstcn_split(root, "train", feature_layout="CT")
  with pytest.raises(ConfigError, match="length_tolerance"):
    segmentation_formats.load_mstcn_split(root, "train", length_tolerance=-1)


def test_write_mstcn_video_rejects_length_mismatch(tmp_path):
  with pytest.raises(ValueError, match="T = 2 labels"):
    segmentation_formats.write_mstcn_video(tmp_path, "v", np.zeros([3, 4]), ["SIL", "SIL"])


# ----------------------------------------------------------------------------------------------------------------------
# Real annotation sets (third_party/).


def load_segmentation_set(name):
  label_map = formats.read_mapping(THIRD_PARTY / name / "mapping.txt")
  segments = segmentation_formats.read_segments_tsv(THIRD_PARTY / name / "segments.tsv")
  return label_map, segments


def frame_labels_of(label_map, segments, where):
  return {v: segmentation_formats.segment_rows_to_labels(rows, label_map, where) for v, rows in segments.items()}


@pytest.fixture(scope="module")
def breakfast():
  return load_segmentation_set("breakfast")


def test_breakfast_counts(breakfast):
  label_map, segments = breakfast
  assert label_map.num_classes == 48 and label_map.names[0] == "SIL" and label_map.names[47] == "stir_tea"
  assert len(segments) == 1712
  assert sum(len(rows) for rows in segments.values()) == 11780
  labels = frame_labels_of(label_map, segments, THIRD_PARTY / "breakfast" / "segments.tsv")
  assert sum(len(l) for l in labels.values()) == 3_603_131
  assert min(map(len, labels.values())) == 186 and max(map(len, labels.values())) == 9745
  assert len(np.unique(np.concatenate(list(labels.values())))) == 48
  # Adjacent rows never share a label, so the transcript is the label column.
  for rows in segments.values():
    assert all(a[2] != b[2] for a, b in zip(rows, rows[1:]))
  activities = collections.Counter(v.rsplit("_", 1)[1] for v in segments)
  assert activities["milk"] == 187 and activities["pancake"] == 157


@pytest.mark.parametrize("k, num_train, num_test", [(1, 1456, 252), (2, 1257, 451), (3, 1276, 432),
                                                    (4, 1135, 573)])
def test_breakfast_splits(breakfast, k, num_train, num_test):
  _, segments = breakfast
  train = formats.read_split_list(THIRD_PARTY / "breakfast" / "splits" / f"split{k}.train")
  test = formats.read_split_list(THIRD_PARTY / "breakfast" / "splits" / f"split{k}.test")
  assert (len(train), len(test)) == (num_train, num_test)
  assert not set(train) & set(test)
  assert set(train) | set(test) <= set(segments)
  assert len(set(segments) - set(train) - set(test)) == 4


def test_50salads_counts():
  label_map, segments = load_segmentation_set("50salads")
  assert label_map.num_classes == 19 and label_map.names[17:] == ("action_start", "action_end")
  assert len(segments) == 50 and sum(len(rows) for rows in segments.values()) == 999
  labels = frame_labels_of(label_map, segments, "50salads")
  assert sum(len(l) for l in labels.values()) == 577_609
  for k in range(1, 6):
    train = formats.read_split_list(THIRD_PARTY / "50salads" / "splits" / f"split{k}.train")
    test = formats.read_split_list(THIRD_PARTY / "50salads" / "splits" / f"split{k}.test")
    assert (len(train), len(test)) == (40, 10) and set(train) | set(test) == set(segments)


def test_gtea_counts():
  label_map, segments = load_segmentation_set("gtea")
  assert label_map.num_classes == 11 and label_map.names[0] == "background"
  assert len(segments) == 21 and sum(len(rows) for rows in segments.values()) == 633
  labels = frame_labels_of(label_map, segments, "gtea")
  assert sum(len(l) for l in labels.values()) == 4667
  assert sum(label != "background" for rows in segments.values() for _, _, label in rows) == 391
  for k in range(1, 5):
    train = formats.read_split_list(THIRD_PARTY / "gtea" / "splits" / f"split{k}.train")
    test = formats.read_split_list(THIRD_PARTY / "gtea" / "splits" / f"split{k}.test")
    assert (len(train), len(test)) == (21, 7)
    assert set(test) <= set(segments) if k < 4 else not set(test) & set(segments)


def test_mstcn_directory_from_breakfast_segments(tmp_path, breakfast):
  """An MS-TCN directory with the real labels of the 4 shortest split-1 test videos and random [D, T] features."""
  label_map, segments = breakfast
  test = formats.read_split_list(THIRD_PARTY / "breakfast" / "splits" / "split1.test")
  names = sorted(test, key=lambda v: segments[v][-1][1])[:4]
  formats.write_mapping(tmp_path / "mapping.txt", label_map)
  rng = np.random.default_rng(0)
  for name in names:
    label_names = [label for start, end, label in segments[name] for _ in range(end - start)]
    segmentation_formats.write_mstcn_video(tmp_path, name, rng.normal(size=[len(label_names), 8]), label_names,
                              write_transcript=False)
  formats.write_split_list(segmentation_formats.split_path(tmp_path, "test", 1), [f"{n}.txt" for n in names])
  dataset = segmentation_formats.load_mstcn_split(tmp_path, "test", 1, feature_dim=8)
  assert [v.name for v in dataset.videos] == names
  for video in dataset.videos:
    expected = segmentation_formats.segment_rows_to_labels(segments[video.name], label_map, "segments.tsv")
    np.testing.assert_array_equal(video.labels, expected)
    np.testing.assert_array_equal(video.transcript, label_map.ids([r[2] for r in segments[video.name]], "tsv"))
    assert video.features.shape == (video.labels.shape[0], 8)


@pytest.mark.parametrize("videos", [[], ["v1", "v1"]])
def test_mstcn_bad_videos_argument(tmp_path, videos):
  root = make_dataset(tmp_path, VIDEOS)
  assert_data_error(lambda: segmentation_formats.load_mstcn_split(root, "train", videos=videos), root,
                    "distinct videos")


def test_written_files_are_readable_by_others(tmp_path):
  formats.write_mapping(tmp_path / "mapping.txt", LABELS)
  umask = formats._UMASK  # pylint: disable=protected-access
  assert (tmp_path / "mapping.txt").stat().st_mode & 0o777 == 0o666 & ~umask
