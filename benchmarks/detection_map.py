r"""Times ActivityNet-protocol detection mAP on the real THUMOS'14 test ground truth.

  python benchmarks/detection_map.py [--num_predictions=10000] [--repeats=3] [--seed=0]

Prints one JSON line: the median wall time of `hal_jax.metrics.detection.detection_scores` (7 thresholds 0.1-0.7,
the 210-video test list) over `--repeats` runs, on random predictions: half are jittered copies of ground-truth
instances (so the matching and locking logic does real work), half are random segments of random classes.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np
from absl import app, flags

from hal_jax.data import localization_formats, formats
from hal_jax.metrics import detection

_NUM_PREDICTIONS = flags.DEFINE_integer("num_predictions", 10_000, "Number of random predictions.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs (the median is reported).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random predictions.")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The copy in third_party/ is the one the repository ships; the shared one is where it is copied from.
_DATA_DIRS = (os.path.join(_REPO, "third_party", "thumos14"), "/work/shared/data/thumos14")


def _data_dir() -> str:
  for directory in _DATA_DIRS:
    if os.path.isfile(os.path.join(directory, "gt.json")):
      return directory
  raise FileNotFoundError(f"THUMOS'14 gt.json not found in {_DATA_DIRS}")


def random_predictions(ground_truth: dict[str, localization_formats.DetectionVideo], videos: list[str],
                       num_predictions: int, seed: int) -> dict[str, list[localization_formats.Detection]]:
  """Half jittered GT instances, half uniform random segments; scores uniform in [0, 1)."""
  rng = np.random.default_rng(seed)
  classes = sorted({a.label for name in videos for a in ground_truth[name].annotations})
  instances = [(name, a) for name in videos for a in ground_truth[name].annotations]
  predictions: dict[str, list[localization_formats.Detection]] = {name: [] for name in videos}
  for i in range(num_predictions):
    if i % 2 == 0:
      name, annotation = instances[rng.integers(len(instances))]
      start, end = annotation.segment
      length = max(end - start, 0.1)
      start, end = start + rng.normal(0, 0.2) * length, end + rng.normal(0, 0.2) * length
      label = annotation.label
    else:
      name = videos[rng.integers(len(videos))]
      duration = ground_truth[name].duration
      start = rng.uniform(0, duration)
      end = start + np.exp(rng.uniform(np.log(0.5), np.log(30.0)))
      label = classes[rng.integers(len(classes))]
    start = max(start, 0.0)
    predictions[name].append(localization_formats.Detection(label, float(rng.random()), (start, max(end, start + 0.1))))
  return predictions


def main(argv):
  del argv
  data_dir = _data_dir()
  ground_truth = localization_formats.read_detection_ground_truth(os.path.join(data_dir, "gt.json"))
  videos = formats.read_split_list(os.path.join(data_dir, "splits", "test.txt"))
  predictions = random_predictions(ground_truth, videos, _NUM_PREDICTIONS.value, _SEED.value)
  thresholds = detection.parse_tiou_range("0.1:0.7:0.1")
  seconds = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    scores = detection.detection_scores(ground_truth, predictions, tiou_thresholds=thresholds, subset="test",
                                        videos=videos)
    seconds.append(time.perf_counter() - start)
  print(json.dumps({
      "benchmark": "detection_map", "dataset": "thumos14", "ground_truth": os.path.relpath(data_dir, _REPO),
      "videos": len(videos), "gt_instances": sum(len(ground_truth[v].annotations) for v in videos),
      "predictions": _NUM_PREDICTIONS.value, "thresholds": len(thresholds), "repeats": _REPEATS.value,
      "seconds_median": round(statistics.median(seconds), 4), "seconds_min": round(min(seconds), 4),
      "average_map": round(scores["average_map"], 4), "map@0.50": round(scores["map@0.50"], 4)}))


if __name__ == "__main__":
  app.run(main)
