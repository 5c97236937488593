r"""Scores prediction files against ground truth; prints one JSON object on stdout.

Segmentation (MS-TCN layout: `<video>.txt` with one label name per frame in both directories)::

  python -m hal_jax.evaluate --task=segmentation --ground_truth=data/gtea/groundTruth \
      --predictions=workdir/predictions [--mapping=data/gtea/mapping.txt] [--background=background ...] \
      [--plots=workdir/plots]

prints {"mof", "mof_bg", "edit", "f1@10", "f1@25", "f1@50", "iou", "iod", "iou_tasl", "iod_tasl", "iou_nobg",
"iod_nobg", "iou_tasl_nobg", "iod_tasl_nobg"} on a 0-100 scale (definitions: hal_jax/metrics/segmentation.py and
../shared/specs/metrics.md). The background labels (default: the label named "background", MS-TCN's convention;
--background may be repeated) are what MoF-Bg, Edit, F1 and the *_nobg IoU/IoD drop. Without --mapping the labels
are the union of the names seen, with ids in sorted order.

Detection (ActivityNet-style JSON)::

  python -m hal_jax.evaluate --task=localization --ground_truth=third_party/thumos14/gt.json \
      --predictions=workdir/detections.json --subset=test [--videos=third_party/thumos14/splits/test.txt] \
      [--tiou=0.1:0.7:0.1]

prints {"map@0.10", ..., "map@0.70", "average_map"} on a 0-100 scale.

Recognition (a recognition directory's clips.tsv + taxonomy.json, and the predictions.tsv that
``--mode=predict`` writes: ``clip_id`` then ``filtered_l*``, ``flat_l*``, ``joint_l*`` class names)::

  python -m hal_jax.evaluate --task=recognition --ground_truth=data/fma --predictions=workdir/predictions \
      [--subset=test]

prints {"acc_l1", ..., "path_acc", "consistency_flat", "macro_f1", ...} (hal_jax/metrics/recognition.py); every
clip of the subset must have a prediction.

Bad input prints one line `error: <file>: <problem>` on stderr and exits with status 2 (a traceback too with
--verbose). Undefined scores (e.g. MoF-Bg without any non-background frame) are printed as null.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from hal_jax import errors
from hal_jax.data import formats, localization_formats, segmentation_formats
from hal_jax.metrics import detection, segmentation

PathLike = str | os.PathLike[str]
DEFAULT_BACKGROUND = segmentation.MSTCN_BACKGROUND_NAME
TASKS = ("segmentation", "localization", "recognition")


def _label_files(directory: str) -> dict[str, str]:
  """video name -> path of every `<video>.txt` in `directory`."""
  formats.require_directory(directory, "label")
  return {name.removesuffix(".txt"): os.path.join(directory, name)
          for name in sorted(os.listdir(directory)) if name.endswith(".txt")}


def _names_in(path: str) -> set[str]:
  return {line.strip() for line in formats.read_text(path).split("\n") if line.strip()}


def read_segmentation_dirs(ground_truth_dir: PathLike, predictions_dir: PathLike, *,
                           mapping_path: PathLike | None = None
                           ) -> tuple[formats.LabelMap, list[str], list[np.ndarray], list[np.ndarray]]:
  """Reads and checks the frame labels of two MS-TCN style label directories.

  Returns:
    the label map, the video names (sorted), the ground-truth ids and the predicted ids ([T_v] int32 each).
  Raises:
    DataError: no ground truth, a missing prediction file, a length mismatch or an unknown label (naming the file).
  """
  ground_truth_dir, predictions_dir = os.fspath(ground_truth_dir), os.fspath(predictions_dir)
  gt_files = _label_files(ground_truth_dir)
  if not gt_files:
    raise errors.DataError(ground_truth_dir, "no <video>.txt label files")
  formats.require_directory(predictions_dir, "prediction")
  pred_files = {}
  for video in gt_files:
    pred_files[video] = os.path.join(predictions_dir, f"{video}.txt")
    if not os.path.isfile(pred_files[video]):
      raise errors.DataError(pred_files[video], f"missing prediction for ground-truth video {video!r}")
  if mapping_path is not None:
    label_map = formats.read_mapping(mapping_path)
  else:
    names = set().union(*(_names_in(path) for files in (gt_files, pred_files) for path in files.values()))
    label_map = formats.LabelMap(tuple(sorted(names)))
  gt_list, pred_list = [], []
  for video, gt_path in gt_files.items():
    gt = segmentation_formats.read_frame_labels(gt_path, label_map)
    pred = segmentation_formats.read_frame_labels(pred_files[video], label_map)
    if len(pred) != len(gt):
      raise errors.DataError(pred_files[video], f"{len(pred)} frames, but the ground truth {gt_path} has {len(gt)}")
    gt_list.append(gt)
    pred_list.append(pred)
  return label_map, list(gt_files), gt_list, pred_list


def evaluate_segmentation_dirs(ground_truth_dir: PathLike, predictions_dir: PathLike, *,
                               mapping_path: PathLike | None = None, background: Sequence[str] | None = None,
                               plots_dir: PathLike | None = None) -> dict[str, float]:
  """Segmentation scores of the prediction files of every ground-truth video.

  Args:
    ground_truth_dir: `<video>.txt` files, one label name per frame.
    predictions_dir: a `<video>.txt` for every ground-truth video, same number of lines.
    mapping_path: mapping.txt ("<id> <name>"); None: the union of the names seen, in sorted order.
    background: background label names (dropped by MoF-Bg, Edit, F1 and the *_nobg IoU/IoD); None: the label
      "background" if there is one. Names given explicitly must be labels.
    plots_dir: if set, one `<video>.png` per video (ground truth vs prediction).
  Returns:
    `hal_jax.metrics.segmentation.segmentation_scores`' dict (0-100, NaN where undefined).
  """
  label_map, videos, gt_list, pred_list = read_segmentation_dirs(ground_truth_dir, predictions_dir,
                                                                 mapping_path=mapping_path)
  if background is None:
    background_ids = [label_map.index(DEFAULT_BACKGROUND, "")] if DEFAULT_BACKGROUND in label_map else []
  else:
    where = os.fspath(mapping_path) if mapping_path is not None else os.fspath(ground_truth_dir)
    for name in background:
      if name not in label_map:
        raise errors.DataError(where, f"background label {name!r} is not one of the labels")
    background_ids = sorted({label_map.index(name, where) for name in background})
  scores = segmentation.segmentation_scores(gt_list, pred_list, background_ids=background_ids)
  if plots_dir is not None:
    from hal_jax import plotting  # pylint: disable=g-import-not-at-top  (matplotlib only when plotting)
    for video, gt, pred in zip(videos, gt_list, pred_list):
      plotting.plot_segmentation(os.path.join(plots_dir, f"{video}.png"), gt, pred, label_map.names, title=video)
  return scores


def evaluate_localization_files(ground_truth_path: PathLike, predictions_path: PathLike, *,
                             tiou_thresholds: Sequence[float] = detection.THUMOS14_TIOU_THRESHOLDS,
                             subset: str | None = None, videos_path: PathLike | None = None,
                             drop_unknown_labels: bool = False) -> dict[str, float]:
  """Detection mAP of an ActivityNet-style prediction file.

  Args:
    ground_truth_path: ActivityNet-style ground truth JSON.
    predictions_path: ActivityNet-style prediction JSON; videos of other subsets / outside the list are ignored.
    tiou_thresholds: the tIoU thresholds (see `hal_jax.metrics.detection.parse_tiou_range`).
    subset: the evaluated subset (None: every video).
    videos_path: optional list of the evaluated videos (one per line), e.g. THUMOS14's 210-video test list.
    drop_unknown_labels: drop predictions whose label is not a class of the evaluated ground truth (else an error).
  Returns:
    {"map@<t>": ..., "average_map": ...} on a 0-100 scale.
  """
  ground_truth = localization_formats.read_detection_ground_truth(ground_truth_path)
  in_subset = [name for name, video in ground_truth.items() if subset is None or video.subset == subset]
  if not in_subset:
    subsets = sorted({video.subset for video in ground_truth.values()})
    raise errors.DataError(ground_truth_path, f"no videos of subset {subset!r} (subsets: {subsets})")
  videos = None
  if videos_path is not None:
    videos = formats.read_split_list(videos_path)
    allowed = set(in_subset)
    for name in videos:
      if name not in allowed:
        where = "ground truth" if subset is None else f"subset {subset!r} of the ground truth"
        raise errors.DataError(videos_path, f"video {name!r} is not in the {where}")
  if not any(ground_truth[name].annotations for name in (videos if videos is not None else in_subset)):
    raise errors.DataError(ground_truth_path, "the evaluated videos have no annotations")
  # The reader checks video ids and labels against the whole ground truth; dropping unknown labels needs it lenient.
  if drop_unknown_labels:
    predictions = localization_formats.read_detection_predictions(predictions_path)
  else:
    predictions = localization_formats.read_detection_predictions(predictions_path, ground_truth, subset)
  try:
    return detection.detection_scores(ground_truth, predictions, tiou_thresholds=tiou_thresholds, subset=subset,
                                      videos=videos, drop_unknown_labels=drop_unknown_labels)
  except ValueError as error:
    raise errors.DataError(predictions_path, str(error)) from None


def evaluate_recognition_files(data_dir: PathLike, predictions_path: PathLike, *,
                               subset: str | None = None) -> dict[str, float]:
  """Recognition scores of a predictions.tsv (or a directory holding one) against the clips of `subset`.

  Args:
    data_dir: a recognition directory (clips.tsv, taxonomy.json; features are not read).
    predictions_path: predictions.tsv, or the directory `--mode=predict` wrote it into.
    subset: the evaluated subset (None: every clip).
  """
  from hal_jax.data import recognition_formats  # pylint: disable=g-import-not-at-top
  from hal_jax.metrics import recognition  # pylint: disable=g-import-not-at-top
  from hal_jax.tasks import recognition as recognition_task  # pylint: disable=g-import-not-at-top
  data_dir, predictions_path = os.fspath(data_dir), os.fspath(predictions_path)
  if os.path.isdir(predictions_path):
    predictions_path = os.path.join(predictions_path, recognition_task.PREDICTIONS_FILE)
  taxonomy = recognition_formats.read_taxonomy(data_dir, with_text=False)
  clips_path = os.path.join(data_dir, recognition_formats.CLIPS_FILE)
  truth = recognition_formats.read_label_rows(clips_path, taxonomy, {"label": taxonomy.num_levels},
                                              extra_columns=recognition_formats.CLIP_COLUMNS[1:])
  clips = [c for c, row in truth.items() if subset is None or row["subset"] == subset]
  if not clips:
    raise errors.DataError(clips_path, f"no clips of subset {subset!r}")
  predicted = recognition_task.read_predictions(predictions_path, taxonomy)
  missing = [c for c in clips if c not in predicted]
  if missing:
    raise errors.DataError(predictions_path, f"no prediction for {len(missing)} clips, e.g. {missing[0]!r}")
  labels = np.stack([truth[c]["label"] for c in clips])
  paths = {kind: np.stack([predicted[c][kind] for c in clips]) for kind in recognition_task.PREDICTION_KINDS}
  try:
    return recognition.recognition_scores(labels, paths["filtered"], paths["flat"], taxonomy.parents,
                                          joint=paths["joint"], leaf_values=taxonomy.leaf_values)
  except ValueError as error:
    raise errors.DataError(predictions_path, str(error)) from None


def to_json(scores: dict[str, float]) -> str:
  """One line of strict JSON; NaN (an undefined score) becomes null."""
  return json.dumps({key: None if math.isnan(value) else value for key, value in scores.items()})


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagValues:
  """Defines the command line's flags in `flag_values` (tests pass a fresh `flags.FlagValues()`)."""
  # Defined on demand, not at import, so that importing this module (from train.py, main.py) adds no flags.
  string = functools.partial(flags.DEFINE_string, flag_values=flag_values)
  boolean = functools.partial(flags.DEFINE_bool, flag_values=flag_values)
  string("task", None, f"What to score: one of {', '.join(TASKS)}.")
  string("ground_truth", None, "Segmentation: directory of <video>.txt; localization: ground truth JSON.")
  string("predictions", None, "Segmentation: directory of <video>.txt; localization: prediction JSON.")
  string("mapping", None, "Segmentation: mapping.txt; default: the sorted union of the label names.")
  flags.DEFINE_multi_string("background", None, f"Segmentation: background label name(s); default "
                            f"{DEFAULT_BACKGROUND!r} when present.", flag_values=flag_values)
  string("plots", None, "Segmentation: write <video>.png bar plots into this directory.")
  string("subset", None, "Detection / recognition: the subset to evaluate (default: all).")
  string("videos", None, "Detection: file listing the evaluated videos (default: all of the subset).")
  string("tiou", "0.1:0.7:0.1", "Detection: tIoU thresholds, 'start:stop:step' (inclusive) or 'a,b'.")
  boolean("drop_unknown_labels", False, "Detection: drop predictions of labels that are not GT classes.")
  boolean("verbose", False, "Print the traceback of a bad-input error too.")
  return flag_values


def _run(flag_values: flags.FlagValues) -> dict[str, float]:
  """Checks the flags and scores; raises ConfigError/DataError on bad input."""
  task = flag_values.task
  if task not in TASKS:
    raise errors.ConfigError("--task", f"must be one of {', '.join(TASKS)}, got {task!r}")
  for name in ("ground_truth", "predictions"):
    if not flag_values[name].value:
      raise errors.ConfigError(f"--{name}", "is required")
  only_for = {"mapping": ("segmentation",), "background": ("segmentation",), "plots": ("segmentation",),
              "subset": ("localization", "recognition"), "videos": ("localization",), "tiou": ("localization",),
              "drop_unknown_labels": ("localization",)}
  for name, tasks in only_for.items():
    if task not in tasks and flag_values[name].present:
      raise errors.ConfigError(f"--{name}", f"applies to --task={' / '.join(tasks)} only")
  if task == "recognition":
    return evaluate_recognition_files(flag_values.ground_truth, flag_values.predictions, subset=flag_values.subset)
  if task == "segmentation":
    return evaluate_segmentation_dirs(flag_values.ground_truth, flag_values.predictions,
                                      mapping_path=flag_values.mapping, background=flag_values.background,
                                      plots_dir=flag_values.plots)
  try:
    thresholds = detection.parse_tiou_range(flag_values.tiou)
  except ValueError as error:
    raise errors.ConfigError("--tiou", str(error)) from None
  return evaluate_localization_files(flag_values.ground_truth, flag_values.predictions, tiou_thresholds=thresholds,
                                  subset=flag_values.subset, videos_path=flag_values.videos,
                                  drop_unknown_labels=flag_values.drop_unknown_labels)


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  with errors.exit_on_bad_input(flag_values.verbose):
    scores = _run(flag_values)
  print(to_json(scores))
  sys.stdout.flush()


if __name__ == "__main__":
  define_flags()
  app.run(main)
