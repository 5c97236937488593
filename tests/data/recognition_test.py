"""Recognition directories (reader, strict validation), their synthetic generators and the clip pipeline."""

import dataclasses
import os

import numpy as np
import pytest

from hal_jax.data import recognition_formats as rf
from hal_jax.data import recognition_pipeline
from hal_jax.data import synthetic
from hal_jax.data import synthetic_recognition
from hal_jax.errors import DataError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  return synthetic.generate(tmp_path_factory.mktemp("rec") / "data", synthetic_recognition.PRESETS["recognition_test"])


def _copy(tiny_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  root = tmp_path / "copy"
  shutil.copytree(tiny_dir, root)
  return str(root)


def _edit_line(path, old, new, count=1):
  with open(path, encoding="utf-8") as f:
    text = f.read()
  assert old in text
  with open(path, "w", encoding="utf-8") as f:
    f.write(text.replace(old, new, count))


def test_generated_test_preset_reads_back(tiny_dir):
  taxonomy, subsets = rf.load_directory(tiny_dir)
  assert taxonomy.sizes == (2, 6) and taxonomy.level_names == ("level1", "level2")
  assert [len(t) for t in taxonomy.text] == [2, 6]
  assert {k: len(v.videos) for k, v in subsets.items()} == {"train": 64, "test": 32}
  labels = subsets["train"].labels
  assert taxonomy.consistent(labels).all()
  lengths = [len(c.features) for c in subsets["train"].videos]
  assert min(lengths) >= 4 and max(lengths) <= 24
  assert {c.patient for c in subsets["train"].videos}.isdisjoint({c.patient for c in subsets["test"].videos})


def test_generation_is_a_pure_function_of_the_config(tmp_path):
  config = dataclasses.replace(synthetic_recognition.PRESETS["recognition_test"], num_train=4, num_test=2)
  a = rf.load_directory(synthetic.generate(tmp_path / "a", config))[1]
  b = rf.load_directory(synthetic.generate(tmp_path / "b", config))[1]
  for clip_a, clip_b in zip(a["train"].videos, b["train"].videos):
    np.testing.assert_array_equal(clip_a.features, clip_b.features)


def test_fma_preset_items_scores_and_patients(tmp_path):
  config = dataclasses.replace(synthetic_recognition.PRESETS["fma"], num_patients=6, test_patients=2, attempts=1)
  taxonomy, subsets = rf.load_directory(synthetic.generate(tmp_path / "fma", config))
  assert taxonomy.sizes == (4, 12)
  np.testing.assert_array_equal(taxonomy.leaf_values, np.tile([0.0, 1.0, 2.0], 4))
  np.testing.assert_array_equal(taxonomy.parents[1], np.repeat(np.arange(4), 3))
  assert len({c.patient for c in subsets["test"].videos}) == 2


@pytest.mark.parametrize("source, sizes", [("finegym", (4, 14, 99)), ("fineaction", (14, 106))])
def test_real_taxonomies_with_clips_cut_from_element_spans(tmp_path, source, sizes):
  preset = "finegym_elements" if source == "finegym" else "fineaction_elements"
  config = dataclasses.replace(synthetic_recognition.PRESETS[preset], max_videos=3)
  taxonomy, subsets = rf.load_directory(synthetic.generate(tmp_path / source, config))
  assert taxonomy.sizes == sizes and taxonomy.text is None
  annotations = synthetic_recognition._annotations(config)  # pylint: disable=protected-access
  first = [v for v in annotations.videos if v.subset == "train"][:3]
  clips = subsets["train"].videos
  assert len(clips) == sum(len(v.segments) for v in first)
  segment = first[0].segments[0]
  assert clips[0].labels[-1] == segment.fine_label and clips[0].labels[-2] == segment.coarse_label
  # The clip spans the real element: its length is the element's duration at the feature rate.
  expected = np.ceil(segment.end_s * config.feature_fps) - np.floor(segment.start_s * config.feature_fps)
  assert len(clips[0].features) == max(int(expected), 1)
  if source == "finegym":
    assert taxonomy.classes[0] == ("VT", "FX", "BB", "UB") and taxonomy.classes[1][0] == "vault"


def test_zero_shot_directory_holds_the_unseen_leaves(tmp_path):
  config = dataclasses.replace(synthetic_recognition.PRESETS["recognition_test"], zero_shot_leaves=1)
  root = synthetic.generate(tmp_path / "zs", config)
  seen, seen_subsets = rf.load_directory(root)
  full, unseen_subsets = rf.load_directory(os.path.join(root, "zero_shot"))
  assert seen.sizes == (2, 4) and full.sizes == (2, 6)
  unseen_names = set(full.classes[1]) - set(seen.classes[1])
  assert unseen_names == {"c0.2", "c1.2"}
  assert {full.classes[1][c.labels[1]] for c in unseen_subsets["test"].videos} <= unseen_names
  assert [c.name for c in unseen_subsets["train"].videos] == [c.name for c in seen_subsets["train"].videos]
  assert {full.classes[1][c.labels[1]] for c in unseen_subsets["shots"].videos} == unseen_names
  np.testing.assert_array_equal(full.text[1][[0, 1, 3, 4]], seen.text[1])
  assert "zero_shot" not in seen_subsets


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: one DataError naming the file.


@pytest.mark.parametrize("case, where, what", [
    ("label outside the taxonomy", "clips.tsv", r"label 'c9\.1' is not a class of level 2"),
    ("inconsistent path", "clips.tsv", r"inconsistent label path: 'c1\.0' belongs to 'c1', not to 'c0'"),
    ("clip without features", "features/train_00003.npy", "has no features"),
    ("text rows != classes", "text/level_2.npy", "5 rows, but level 2 .* has 6 classes"),
    ("patient in two subsets", "clips.tsv", "patient 'train_subject00' is in subsets 'train' and 'test'"),
    ("parent index out of range", "taxonomy.json", r"parents\[2\] .* not a class index of level 1"),
    ("class without children", "taxonomy.json", "class 'c1' of level 1 has no child"),
    ("features of another width", "features/train_00001.npy", "feature dim 3, other clips have 16"),
])
def test_bad_directory_names_the_file(tiny_dir, tmp_path, case, where, what):
  root = _copy(tiny_dir, tmp_path)
  clips = os.path.join(root, "clips.tsv")
  with open(clips, encoding="utf-8") as f:
    first = f.read().split("\n")[1].split("\t")  # train_00000: its path is label_l1, label_l2
  if case == "label outside the taxonomy":
    _edit_line(clips, "\t".join(first[3:]), f"{first[3]}\tc9.1")
  elif case == "inconsistent path":
    _edit_line(clips, "\t".join(first[3:]), "c0\tc1.0")
  elif case == "clip without features":
    os.remove(os.path.join(root, "features", "train_00003.npy"))
  elif case == "text rows != classes":
    np.save(os.path.join(root, "text", "level_2.npy"), np.zeros([5, 8], np.float32))
  elif case == "patient in two subsets":
    _edit_line(clips, "\ttest_subject00\ttest\t", "\ttrain_subject00\ttest\t")
  elif case == "parent index out of range":
    _edit_line(os.path.join(root, "taxonomy.json"), '"parents":[0,0,0,1,1,1]', '"parents":[0,0,7,1,1,1]')
  elif case == "class without children":
    _edit_line(os.path.join(root, "taxonomy.json"), '"parents":[0,0,0,1,1,1]', '"parents":[0,0,0,0,0,0]')
  elif case == "features of another width":
    np.save(os.path.join(root, "features", "train_00001.npy"), np.zeros([5, 3], np.float32))
  with pytest.raises(DataError) as info:
    rf.load_directory(root)
  assert info.value.where == os.path.join(root, where)
  assert __import__("re").search(what, info.value.what), info.value.what


# ----------------------------------------------------------------------------------------------------------------------
# Pipeline.


def test_feature_rows_bins_centres_and_short_clips():
  np.testing.assert_array_equal(recognition_pipeline.feature_rows(3, 4, None), [0, 1, 2])
  np.testing.assert_array_equal(recognition_pipeline.feature_rows(8, 4, None), [0, 2, 4, 6])
  np.testing.assert_array_equal(recognition_pipeline.feature_rows(12, 4, None), [1, 4, 7, 10])
  rng = np.random.default_rng(0)
  for _ in range(20):
    picked = recognition_pipeline.feature_rows(13, 4, rng)
    edges = recognition_pipeline.bin_edges(13, 4)
    assert np.all((picked >= edges[:-1]) & (picked < edges[1:]))


def test_pipeline_batches_are_static_masked_and_seeded(tiny_dir):
  _, subsets = rf.load_directory(tiny_dir)
  train = recognition_pipeline.RecognitionPipeline(subsets["train"], batch_size=24, train=True, seed=3,
                                                   num_frames=8, process_index=0, process_count=1, num_devices=1)
  assert train.num_batches_per_epoch == 3
  last = train.batch(0, 2)  # 64 = 24 + 24 + 16: eight padding clips
  assert last["features"].shape == (24, 8, 16) and last["labels"].shape == (24, 2)
  assert last["batch_mask"].sum() == 16 and (last["labels"][~last["batch_mask"]] == -1).all()
  assert not last["frame_mask"][~last["batch_mask"]].any()
  for row in np.flatnonzero(last["batch_mask"]):
    clip = subsets["train"].videos[last["video_index"][row]]
    assert last["frame_mask"][row].sum() == min(len(clip.features), 8)
    np.testing.assert_array_equal(last["labels"][row], clip.labels)
  again = train.batch(0, 2)
  np.testing.assert_array_equal(again["features"], last["features"])
  assert not np.array_equal(train.batch(1, 0)["video_index"], train.batch(0, 0)["video_index"])
  streamed = list(train.epoch_batches(0))
  np.testing.assert_array_equal(streamed[2]["features"], last["features"])
  for key, spec in train.batch_spec().items():
    assert last[key].shape == spec.shape and last[key].dtype == spec.dtype
