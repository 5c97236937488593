"""Property-based tests (hypothesis) of every reader and of the `hal_jax.evaluate` command line on malformed input.

Each test starts from a valid file or directory written by the library's own writers and mutates it: truncated
files, replaced or duplicated lines and fields, odd tokens (NaN, inf, 1e309, 5000-digit numbers, NUL, BOM, path
separators, non-ASCII digits), other encodings (UTF-16, Latin-1), random bytes, JSON subtrees replaced by random JSON
(huge integers, deep nesting, duplicate keys), feature arrays of every dtype and rank. Every generated input must
end in the project's own one-line error (`hal_jax.errors.HalJaxError`) or a correct result (the reader's output
written back and read again is the same); anything else (a traceback) fails the test with the shrunk example.

The runs are deterministic (`derandomize=True`, no example database) and sized by `max_examples`: 1,330 generated
inputs in all (see `EXAMPLES`), about 40 s on the 2-core CI machine.
"""

import contextlib
import io
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from hal_jax import errors
from hal_jax.data import localization_formats
from hal_jax.data import formats
from hal_jax.data import segmentation_formats
from hal_jax.data import hierarchy_formats
from tests import evaluate_cli

# Examples per test; their sum is the number of malformed inputs per run (asserted below: at least 1,000).
EXAMPLES = {
    "mapping": 120, "split_list": 80, "frame_labels": 80, "segments_tsv": 80, "feature_arrays": 120,
    "npy_bytes": 60, "mstcn_directory": 80, "ground_truth_json": 120, "predictions_json": 80, "video_info": 50,
    "fine_to_coarse": 60, "hierarchy_directory": 80, "localization_directory": 40, "checkpoint_metadata": 30,
    "evaluate_segmentation_cli": 75, "evaluate_detection_cli": 75,
}


def _fuzz(name: str):
  return settings(max_examples=EXAMPLES[name], derandomize=True, database=None, deadline=None, print_blob=False,
                  suppress_health_check=list(HealthCheck))


def test_at_least_a_thousand_generated_inputs_per_run():
  assert sum(EXAMPLES.values()) >= 1000


def _one_line_or_result(read, *args, **kwargs):
  """`read(*args, **kwargs)`, or None when it raised the project's error, checked to print as one line."""
  try:
    return read(*args, **kwargs)
  except errors.HalJaxError as error:
    line = errors.format_error(error)
    assert "\n" not in line and line.startswith("error: ") and error.what.strip(), line
    return None


@contextlib.contextmanager
def _scratch():
  directory = tempfile.mkdtemp(prefix="hal_jax_fuzz_")
  try:
    yield directory
  finally:
    shutil.rmtree(directory, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# Mutations of text files.

ODD_TOKENS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1", "0", "-0", "", " ", "\t", "\r", "\x00", "é",
              "\ufeff", "..", ".", "/", "a/b", "a\\b", "a b", " x", "99999999999999999999", "9" * 5000, "0x10",
              "1_000", "²", "٣", "{", "[", '"', "null", "true", "1.5", "-1e-300", "background", "action00", "v0"]
_TOKEN = st.one_of(st.sampled_from(ODD_TOKENS), st.text(max_size=10))
_OPERATIONS = ["replace_line", "replace_field", "delete_line", "duplicate_line", "insert_line", "swap_lines",
               "truncate", "random_bytes", "encoding", "crlf", "empty", "tabs_to_spaces"]


@st.composite
def mutated_text(draw, valid: str) -> bytes:
  """The bytes of `valid` after one to three random mutations."""
  lines = valid.split("\n")
  encoding, crlf, cut, noise = "utf-8", False, None, None
  for _ in range(draw(st.integers(1, 3))):
    operation = draw(st.sampled_from(_OPERATIONS))
    index = draw(st.integers(0, max(len(lines) - 1, 0)))
    if operation == "replace_line" and lines:
      lines[index] = draw(_TOKEN)
    elif operation == "replace_field" and lines:
      separator = "\t" if "\t" in lines[index] else " "
      fields = lines[index].split(separator)
      fields[draw(st.integers(0, len(fields) - 1))] = draw(_TOKEN)
      lines[index] = separator.join(fields)
    elif operation == "delete_line" and lines:
      del lines[index]
    elif operation == "duplicate_line" and lines:
      lines.insert(index, lines[index])
    elif operation == "insert_line":
      lines.insert(index, draw(_TOKEN))
    elif operation == "swap_lines" and len(lines) > 1:
      other = draw(st.integers(0, len(lines) - 1))
      lines[index], lines[other] = lines[other], lines[index]
    elif operation == "truncate":
      cut = draw(st.integers(0, max(len(valid), 1)))
    elif operation == "random_bytes":
      noise = (draw(st.integers(0, max(len(valid), 1))), draw(st.binary(min_size=1, max_size=8)))
    elif operation == "encoding":
      encoding = draw(st.sampled_from(["utf-16", "latin-1", "utf-8-sig"]))
    elif operation == "crlf":
      crlf = True
    elif operation == "empty":
      lines = []
    elif operation == "tabs_to_spaces" and lines:
      lines[index] = lines[index].replace("\t", " ")
  text = ("\r\n" if crlf else "\n").join(lines)
  data = text.encode(encoding, errors="replace")
  if cut is not None:
    data = data[:cut]
  if noise is not None:
    data = data[:noise[0]] + noise[1] + data[noise[0]:]
  return data


def _write(path, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return path


# ----------------------------------------------------------------------------------------------------------------------
# Mutations of JSON files.

_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
                       st.sampled_from([10**400, -10**400, 2**63, 1e308, "NaN", "", "test", "a"]))
_JSON = st.recursive(_JSON_LEAF, lambda children: st.one_of(st.lists(children, max_size=3),
                                                            st.dictionaries(st.text(max_size=6), children, max_size=3)),
                     max_leaves=6)


def _paths(value, prefix=()):
  """Every (path to) subtree of a JSON value."""
  yield prefix
  if isinstance(value, dict):
    for key, child in value.items():
      yield from _paths(child, prefix + (key,))
  elif isinstance(value, list):
    for i, child in enumerate(value):
      yield from _paths(child, prefix + (i,))


def _replace(value, path, new):
  if not path:
    return new
  value = value.copy()
  value[path[0]] = _replace(value[path[0]], path[1:], new)
  return value


def _delete(value, path):
  if len(path) == 1:
    value = value.copy()
    del value[path[0]]
    return value
  value = value.copy()
  value[path[0]] = _delete(value[path[0]], path[1:])
  return value


@st.composite
def mutated_json(draw, valid) -> bytes:
  """`valid` (a JSON value) with subtrees replaced or deleted, or its text damaged (truncated, deeply nested,
  duplicate keys, non-standard NaN/Infinity tokens)."""
  value = valid
  for _ in range(draw(st.integers(1, 3))):
    paths = list(_paths(value))
    path = draw(st.sampled_from(paths))
    operation = draw(st.sampled_from(["replace", "replace", "delete", "text"]))
    if operation == "replace":
      value = _replace(value, path, draw(_JSON))
    elif operation == "delete" and path:
      value = _delete(value, path)
  text = json.dumps(value)  # NaN and Infinity come out as the non-standard tokens Python also reads.
  damage = draw(st.sampled_from(["none", "none", "truncate", "nest", "duplicate_key", "text"]))
  if damage == "truncate":
    text = text[:draw(st.integers(0, len(text)))]
  elif damage == "nest":
    depth = draw(st.sampled_from([10, 3000]))
    text = "[" * depth + text + "]" * depth
  elif damage == "duplicate_key" and text.startswith("{") and len(text) > 2:
    text = '{"database": {}, "results": {}, ' + text[1:]
  elif damage == "text":
    return draw(mutated_text(text))
  return text.encode()


# ----------------------------------------------------------------------------------------------------------------------
# MS-TCN readers.

LABELS = ("background", "action00", "action01")
MAPPING = "".join(f"{i} {name}\n" for i, name in enumerate(LABELS))


@_fuzz("mapping")
@given(data=mutated_text(MAPPING))
def test_mapping_file(data):
  with _scratch() as root:
    path = _write(os.path.join(root, "mapping.txt"), data)
    label_map = _one_line_or_result(formats.read_mapping, path)
    if label_map is not None:
      assert label_map.num_classes >= 1 and len(set(label_map.names)) == label_map.num_classes
      formats.write_mapping(path, label_map)
      assert formats.read_mapping(path) == label_map


@_fuzz("split_list")
@given(data=mutated_text("v0\nv1.txt\nv2\n"))
def test_split_list(data):
  with _scratch() as root:
    path = _write(os.path.join(root, "train.split1.bundle"), data)
    videos = _one_line_or_result(formats.read_split_list, path)
    if videos is not None:
      assert len(set(videos)) == len(videos)
      for name in videos:
        assert name and "/" not in name and name not in (".", "..") and not name.endswith(".txt")
      formats.write_split_list(path, videos)
      assert formats.read_split_list(path) == videos


@_fuzz("frame_labels")
@given(data=mutated_text("background\naction00\naction00\naction01\n"), transcript=st.booleans())
def test_frame_labels_and_transcripts(data, transcript):
  label_map = formats.LabelMap(LABELS)
  with _scratch() as root:
    path = _write(os.path.join(root, "v0.txt"), data)
    read = segmentation_formats.read_transcript if transcript else segmentation_formats.read_frame_labels
    ids = _one_line_or_result(read, path, label_map)
    if ids is not None:
      assert ids.dtype == np.int32 and ids.ndim == 1 and len(ids) >= 1
      assert ((0 <= ids) & (ids < len(LABELS))).all()
      if transcript:
        assert (ids[1:] != ids[:-1]).all()  # Runs collapsed.


SEGMENTS = "video\tstart_frame\tend_frame\tlabel\nv0\t0\t3\tbackground\nv0\t3\t7\taction00\nv1\t0\t5\taction01\n"


@_fuzz("segments_tsv")
@given(data=mutated_text(SEGMENTS))
def test_segments_tsv(data):
  with _scratch() as root:
    path = _write(os.path.join(root, "segments.tsv"), data)
    segments = _one_line_or_result(segmentation_formats.read_segments_tsv, path)
    if segments is not None:
      for rows in segments.values():
        assert rows[0][0] == 0
        assert all(start < end for start, end, _ in rows)
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
      segmentation_formats.write_segments_tsv(path, segments)
      assert segmentation_formats.read_segments_tsv(path) == segments


_DTYPES = ["float32", "float64", "float16", ">f4", "longdouble", "int64", "uint8", "bool", "complex64", "U3", "M8[s]",
           "O", [("a", "f4"), ("b", "f4")]]


@st.composite
def feature_arrays(draw):
  """An array of any rank, dtype and content (NaN, inf, float32 overflow, empty axes)."""
  shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
  dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
  size = int(np.prod(shape))
  values = draw(st.lists(st.sampled_from([0.0, 1.5, -2.0, np.nan, np.inf, -np.inf, 1e300, 1e-320]),
                         min_size=size, max_size=size))
  if dtype.kind in "fc":
    with np.errstate(over="ignore", invalid="ignore"):
      return np.array(values, dtype=np.float64).astype(dtype).reshape(shape)
  if dtype.kind == "O":
    return np.array([{"x": 1}] * size, dtype=object).reshape(shape)
  return np.zeros(shape, dtype)


@_fuzz("feature_arrays")
@given(array=feature_arrays(), layout=st.sampled_from(["DT", "TD"]), feature_dim=st.sampled_from([None, 2, 3]),
       fortran=st.booleans())
def test_feature_arrays(array, layout, feature_dim, fortran):
  with _scratch() as root:
    path = os.path.join(root, "v0.npy")
    np.save(path, np.asfortranarray(array) if fortran else array, allow_pickle=True)
    features = _one_line_or_result(formats.read_features, path, layout, feature_dim)
    if features is not None:
      expected = array.T if layout == "DT" else array
      assert features.dtype == np.float32 and features.shape == expected.shape
      assert features.size and np.isfinite(features).all()
      assert feature_dim is None or features.shape[1] == feature_dim
      np.testing.assert_array_equal(features, expected.astype(np.float32))


def _npy_bytes(array) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, array)
  return buffer.getvalue()


VALID_NPY = _npy_bytes(np.arange(12, dtype=np.float32).reshape(3, 4))


_NPY_HEADERS = [None, "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 4), }",
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3, -4), }",
                "{'descr': 'zz', 'fortran_order': False, 'shape': (3, 4), }", "__import__('os')", "{'descr': '<f4'}"]


@_fuzz("npy_bytes")
@given(cut=st.integers(0, len(VALID_NPY)), position=st.integers(0, len(VALID_NPY)), noise=st.binary(max_size=16),
       header=st.sampled_from(_NPY_HEADERS))
def test_npy_bytes(cut, position, noise, header):
  data = VALID_NPY
  if header is not None:
    text = header.ljust(118) + "\n"
    data = data[:8] + text.encode("latin-1") + data[128:]
  data = (data[:position] + noise + data[position:])[:max(cut, 1) if noise else cut]
  with _scratch() as root:
    path = _write(os.path.join(root, "v0.npy"), data)
    features = _one_line_or_result(formats.read_features, path, "DT")
    if features is not None:
      assert features.dtype == np.float32 and features.ndim == 2 and np.isfinite(features).all()


def _mstcn_directory(root: str) -> None:
  """A valid three-video MS-TCN directory: v0, v1 in train.split1, v2 in test.split1."""
  formats.write_mapping(os.path.join(root, "mapping.txt"), formats.LabelMap(LABELS))
  rng = np.random.default_rng(0)
  for name, labels in [("v0", ["background"] * 2 + ["action00"] * 3), ("v1", ["action01"] * 4),
                       ("v2", ["background", "action00", "action01"])]:
    segmentation_formats.write_mstcn_video(root, name, rng.normal(size=(len(labels), 4)), labels)
  formats.write_split_list(segmentation_formats.split_path(root, "train", 1), ["v0", "v1"])
  formats.write_split_list(segmentation_formats.split_path(root, "test", 1), ["v2"])


_MSTCN_FILES = ["mapping.txt", "splits/train.split1.bundle", "groundTruth/v0.txt", "groundTruth/v1.txt",
                "transcripts/v0.txt", "transcripts/v1.txt", "features/v1.npy"]


@_fuzz("mstcn_directory")
@given(data=st.data(), target=st.sampled_from(_MSTCN_FILES), action=st.sampled_from(["mutate", "mutate", "remove"]),
       tolerance=st.sampled_from([0, 1]))
def test_mstcn_directory(data, target, action, tolerance):
  with _scratch() as root:
    _mstcn_directory(root)
    path = os.path.join(root, target)
    if action == "remove":
      os.remove(path)
    elif target.endswith(".npy"):
      np.save(path, data.draw(feature_arrays()), allow_pickle=True)
    else:
      with open(path, encoding="utf-8") as f:
        _write(path, data.draw(mutated_text(f.read())))
    dataset = _one_line_or_result(segmentation_formats.load_mstcn_split, root, "train", 1, feature_layout="DT",
                                  feature_dim=4, length_tolerance=tolerance)
    if dataset is not None:
      for video in dataset.videos:
        assert video.features.shape == (len(video.labels), 4) and np.isfinite(video.features).all()
        assert 1 <= len(video.transcript) <= len(video.labels)
        assert ((0 <= video.labels) & (video.labels < dataset.label_map.num_classes)).all()


# ----------------------------------------------------------------------------------------------------------------------
# ActivityNet / THUMOS JSON, video_info.tsv, localization directories.

GROUND_TRUTH = {"version": "1.3", "taxonomy": [], "database": {
    "v0": {"subset": "train", "duration": 10.0, "annotations": [{"segment": [1.0, 3.5], "label": "a"},
                                                                 {"segment": [5.0, 9.0], "label": "b"}]},
    "v1": {"subset": "test", "duration": 8.0, "annotations": [{"segment": [0.5, 2.0], "label": "a"}]}}}
PREDICTIONS = {"version": "1.3", "external_data": {}, "results": {
    "v1": [{"label": "a", "score": 0.9, "segment": [0.4, 2.1]}, {"label": "b", "score": 0.2, "segment": [3.0, 4.0]}]}}


@_fuzz("ground_truth_json")
@given(data=mutated_json(GROUND_TRUTH), strict_bounds=st.booleans())
def test_detection_ground_truth_json(data, strict_bounds):
  with _scratch() as root:
    path = _write(os.path.join(root, "gt.json"), data)
    videos = _one_line_or_result(localization_formats.read_detection_ground_truth, path, strict_bounds=strict_bounds)
    if videos is not None:
      for video in videos.values():
        assert np.isfinite(video.duration) and video.duration > 0
        assert all(0 <= a.segment[0] <= a.segment[1] for a in video.annotations)
      localization_formats.write_detection_ground_truth(path, videos)
      assert localization_formats.read_detection_ground_truth(path) == videos


@_fuzz("predictions_json")
@given(data=mutated_json(PREDICTIONS), checked=st.booleans())
def test_detection_predictions_json(data, checked):
  with _scratch() as root:
    gt_path = os.path.join(root, "gt.json")
    formats.write_text_atomic(gt_path, json.dumps(GROUND_TRUTH))
    ground_truth = localization_formats.read_detection_ground_truth(gt_path) if checked else None
    path = _write(os.path.join(root, "predictions.json"), data)
    predictions = _one_line_or_result(localization_formats.read_detection_predictions, path, ground_truth)
    if predictions is not None:
      for detections in predictions.values():
        assert all(np.isfinite(d.score) and d.segment[0] <= d.segment[1] for d in detections)
      localization_formats.write_detection_predictions(path, predictions)
      assert localization_formats.read_detection_predictions(path) == predictions


VIDEO_INFO = "video\tsubset\tduration_s\tfeature_fps\tnum_features\nv0\ttrain\t10.0\t2.0\t20\nv1\ttest\t8.0\t2.0\t16\n"


@_fuzz("video_info")
@given(data=mutated_text(VIDEO_INFO))
def test_video_info_tsv(data):
  with _scratch() as root:
    path = _write(os.path.join(root, "video_info.tsv"), data)
    infos = _one_line_or_result(localization_formats.read_video_info, path)
    if infos is not None:
      assert all(i.duration > 0 and i.feature_fps > 0 and i.num_features >= 1 for i in infos.values())
      localization_formats.write_video_info(path, list(infos.values()))
      assert localization_formats.read_video_info(path) == infos


def _localization_directory(root: str) -> None:
  formats.write_text_atomic(os.path.join(root, "gt.json"), json.dumps(GROUND_TRUTH))
  formats.write_text_atomic(os.path.join(root, "video_info.tsv"), VIDEO_INFO)
  formats.write_text_atomic(os.path.join(root, "fine_to_coarse.json"), '{"0": 0, "1": 0}')
  rng = np.random.default_rng(0)
  for name, steps in (("v0", 20), ("v1", 16)):
    formats.write_features(os.path.join(root, "features", f"{name}.npy"), rng.normal(size=(steps, 3)), "TD")


@_fuzz("localization_directory")
@given(data=st.data(), target=st.sampled_from(["gt.json", "video_info.tsv", "fine_to_coarse.json",
                                               "features/v1.npy"]))
def test_localization_directory(data, target):
  with _scratch() as root:
    _localization_directory(root)
    path = os.path.join(root, target)
    if target.endswith(".npy"):
      np.save(path, data.draw(feature_arrays()), allow_pickle=True)
    elif target.endswith(".json"):
      with open(path, encoding="utf-8") as f:
        _write(path, data.draw(mutated_json(json.load(f))))
    else:
      with open(path, encoding="utf-8") as f:
        _write(path, data.draw(mutated_text(f.read())))
    dataset = _one_line_or_result(localization_formats.load_localization_split, root, "test", feature_dim=3)
    if dataset is not None:
      for video in dataset.videos:
        assert video.features.shape[1] == 3 and np.isfinite(video.features).all()
        assert video.segments.shape == (len(video.labels), 2)


# ----------------------------------------------------------------------------------------------------------------------
# FineGym / FineAction hierarchy.

FINE_TO_COARSE = {"0": 0, "1": 0, "2": 1}
HIERARCHY_SEGMENTS = ("video\tstart_s\tend_s\tcoarse_label\tfine_label\nv0\t1.0\t2.5\t0\t1\nv0\t3.0\t4.0\t1\t2\n"
                      "v1\t0.5\t1.5\t0\t0\n")
HIERARCHY_VIDEOS = "index\tvideo\tsubset\tsec2clip_ratio\tnum_segments\n0\tv0\ttrain\t1.5\t2\n1\tv1\ttest\t1.5\t1\n"


@_fuzz("fine_to_coarse")
@given(data=mutated_json(FINE_TO_COARSE))
def test_fine_to_coarse_json(data):
  with _scratch() as root:
    path = _write(os.path.join(root, "fine_to_coarse.json"), data)
    mapping = _one_line_or_result(hierarchy_formats.read_fine_to_coarse, path)
    if mapping is not None:
      assert sorted(mapping) == list(range(len(mapping)))
      assert sorted(set(mapping.values())) == list(range(max(mapping.values()) + 1))
      hierarchy_formats.write_fine_to_coarse(path, mapping)
      assert hierarchy_formats.read_fine_to_coarse(path) == mapping


@_fuzz("hierarchy_directory")
@given(data=st.data(), target=st.sampled_from(["fine_to_coarse.json", "segments.tsv", "videos.tsv"]))
def test_hierarchy_directory(data, target):
  with _scratch() as root:
    files = {"fine_to_coarse.json": json.dumps(FINE_TO_COARSE), "segments.tsv": HIERARCHY_SEGMENTS,
             "videos.tsv": HIERARCHY_VIDEOS}
    for name, text in files.items():
      formats.write_text_atomic(os.path.join(root, name), text)
    strategy = mutated_json(FINE_TO_COARSE) if target.endswith(".json") else mutated_text(files[target])
    _write(os.path.join(root, target), data.draw(strategy))
    annotations = _one_line_or_result(hierarchy_formats.load_hierarchical_annotations, root)
    if annotations is not None:
      for video in annotations.videos:
        for segment in video.segments:
          assert annotations.fine_to_coarse[segment.fine_label] == segment.coarse_label
          assert np.isfinite(segment.start_s) and np.isfinite(segment.end_s) and segment.start_s >= 0
      out = os.path.join(root, "copy")
      hierarchy_formats.write_hierarchical_annotations(out, annotations)
      again = hierarchy_formats.load_hierarchical_annotations(out)
      assert again.videos == annotations.videos and again.fine_to_coarse == annotations.fine_to_coarse


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint metadata.


@pytest.fixture(scope="module")
def saved_checkpoints(tmp_path_factory):
  """A checkpoint directory with steps 1 and 2 of a small state, and the state's abstract twin."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from hal_jax import checkpoint  # pylint: disable=g-import-not-at-top
  directory = str(tmp_path_factory.mktemp("fuzz_checkpoints") / "ckpt")
  state = {"params": {"w": jnp.ones((2, 3))}, "step": jnp.asarray(0, jnp.int32)}
  ckpt = checkpoint.Checkpointer(directory, keep=5)
  ckpt.save(1, state, {"method": "atba"})
  ckpt.save(2, state, {"method": "atba"})
  ckpt.close()
  return directory, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


@_fuzz("checkpoint_metadata")
@given(data=st.data())
def test_checkpoint_metadata(saved_checkpoints, data):
  from hal_jax import checkpoint  # pylint: disable=g-import-not-at-top
  source, abstract = saved_checkpoints
  with open(os.path.join(source, "2", "meta", "metadata"), encoding="utf-8") as f:
    valid = json.load(f)
  with _scratch() as root:
    directory = os.path.join(root, "ckpt")
    shutil.copytree(source, directory)
    _write(os.path.join(directory, "2", "meta", "metadata"), data.draw(mutated_json(valid)))
    ckpt = checkpoint.Checkpointer(directory, keep=5)
    try:
      restored = _one_line_or_result(ckpt.restore_latest, abstract, expect={"method": "atba"})
    finally:
      ckpt.close()
    if restored is not None:
      assert restored.step in (1, 2) and restored.meta["method"] == "atba"


# ----------------------------------------------------------------------------------------------------------------------
# The hal_jax.evaluate command line, in this process (a fresh flag set per call: tests/evaluate_cli.py).


def _assert_cli_outcome(status: int, stdout: str, stderr: str, keys: set[str]) -> None:
  """Exit 2 with one error line and no output, or exit 0 with one JSON line of scores in [0, 100] (or null)."""
  if status == 2:
    assert stdout == "", stdout
    lines = stderr.strip().split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return
  assert status == 0 and stderr == "", (status, stderr)
  lines = stdout.strip().split("\n")
  assert len(lines) == 1, stdout
  scores = json.loads(lines[0])
  assert keys <= set(scores), scores
  assert all(v is None or 0 <= v <= 100 for v in scores.values()), scores


@_fuzz("evaluate_segmentation_cli")
@given(data=st.data(), target=st.sampled_from(["gt/v0.txt", "pred/v0.txt", "pred/v1.txt", "mapping.txt"]),
       use_mapping=st.booleans(), background=st.sampled_from([None, "background", "SIL"]))
def test_evaluate_cli_segmentation(data, target, use_mapping, background):
  files = {"gt/v0.txt": "background\naction00\naction00\naction01\n", "gt/v1.txt": "action01\naction01\n",
           "pred/v0.txt": "background\naction00\naction01\naction01\n", "pred/v1.txt": "action01\naction00\n",
           "mapping.txt": MAPPING}
  with _scratch() as root:
    for name, text in files.items():
      formats.write_text_atomic(os.path.join(root, name), text)
    _write(os.path.join(root, target), data.draw(mutated_text(files[target])))
    argv = ["--task=segmentation", f"--ground_truth={root}/gt", f"--predictions={root}/pred"]
    argv += [f"--mapping={root}/mapping.txt"] if use_mapping else []
    argv += [f"--background={background}"] if background else []
    _assert_cli_outcome(*evaluate_cli.run(*argv), keys={"mof", "edit", "f1@50", "iou"})


@_fuzz("evaluate_detection_cli")
@given(data=st.data(), target=st.sampled_from(["gt.json", "predictions.json", "videos.txt"]),
       subset=st.sampled_from([None, "test", "nope"]), drop_unknown=st.booleans(),
       tiou=st.sampled_from(["0.1:0.7:0.1", "0.5", "0.5,0.75", "0.9:0.1:0.1", "nan", "sNaN", "0:1:0", "1.5", "",
                                  "0.1:1:1e-9", "inf:inf:1"]))
def test_evaluate_cli_detection(data, target, subset, drop_unknown, tiou):
  with _scratch() as root:
    texts = {"gt.json": json.dumps(GROUND_TRUTH), "predictions.json": json.dumps(PREDICTIONS), "videos.txt": "v1\n"}
    for name, text in texts.items():
      formats.write_text_atomic(os.path.join(root, name), text)
    strategy = mutated_text(texts[target]) if target.endswith(".txt") else mutated_json(json.loads(texts[target]))
    _write(os.path.join(root, target), data.draw(strategy))
    argv = ["--task=localization", f"--ground_truth={root}/gt.json", f"--predictions={root}/predictions.json",
            f"--videos={root}/videos.txt", f"--tiou={tiou}"]
    argv += [f"--subset={subset}"] if subset else []
    argv += ["--drop_unknown_labels"] if drop_unknown else []
    _assert_cli_outcome(*evaluate_cli.run(*argv), keys={"average_map"})
