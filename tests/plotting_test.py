"""Tests for hal_jax.plotting: PNGs are written atomically."""

import json
import os

import numpy as np
import pytest

from hal_jax import plotting
from hal_jax.errors import DataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_png(path):
  with open(path, "rb") as file:
    return file.read()


def test_plot_segmentation_writes_png(tmp_path):
  path = tmp_path / "plots" / "video.png"  # the directory is created
  gt = np.array([0, 1, 1, 1, 2, 2, 2, 2, 0, 0])
  pred = np.array([0, 1, 1, 2, 2, 2, 1, 2, -1, 0])
  plotting.plot_segmentation(path, gt, pred, ("background", "a", "b"), title="video")
  data = read_png(path)
  assert data.startswith(PNG_MAGIC) and len(data) > 1000
  assert os.listdir(path.parent) == ["video.png"]  # no temporary file left behind


def test_many_classes_get_distinct_colors():
  colors = plotting.class_colors(48)
  assert len({tuple(c) for c in colors}) == 48
  assert len({tuple(c) for c in plotting.class_colors(20)}) == 20


def test_plot_training_curves_from_jsonl_and_records(tmp_path):
  jsonl = tmp_path / "metrics.jsonl"
  records = [{"step": s, "train/loss": 1.0 / (s + 1)} for s in range(50)] + [{"step": 49, "eval/mof": 61.5}]
  jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
  plotting.plot_training_curves(tmp_path / "curves.png", jsonl)
  plotting.plot_training_curves(tmp_path / "loss.png", records, keys=["train/loss"])
  assert read_png(tmp_path / "curves.png").startswith(PNG_MAGIC)
  assert read_png(tmp_path / "loss.png").startswith(PNG_MAGIC)


def test_plot_training_curves_bad_input(tmp_path):
  jsonl = tmp_path / "metrics.jsonl"
  jsonl.write_text('{"step": 1, "loss": 2.0}\nnot json\n')
  with pytest.raises(DataError, match="line 2: not JSON"):
    plotting.plot_training_curves(tmp_path / "curves.png", jsonl)
  with pytest.raises(DataError, match="no numeric metrics"):
    plotting.plot_training_curves(tmp_path / "curves.png", [{"step": 1, "note": "x"}])
  assert not os.path.exists(tmp_path / "curves.png")
