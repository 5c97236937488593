"""Tests for hal_jax.metric_writer: JSONL lines, config.json once, non-primary processes write nothing."""

import json
import math

from hal_jax import metric_writer


def test_jsonl_one_line_per_call_with_step(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path), tensorboard=False)
  writer.write_scalars(10, {"train/loss": 1.5, "epoch": 0})
  writer.write_scalars(20, {"train/loss": float("nan")})
  writer.close()
  records = metric_writer.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert records[0] == {"step": 10, "train/loss": 1.5, "epoch": 0}
  assert records[1]["step"] == 20 and records[1]["train/loss"] == "nan"
  assert len(records) == 2


def test_config_written_once(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path), tensorboard=False)
  writer.write_config(str(tmp_path), {"seed": 0})
  writer.write_config(str(tmp_path), {"seed": 1})
  assert json.loads((tmp_path / "config.json").read_text()) == {"seed": 0}
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp_")]


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path), enabled=False)
  writer.write_scalars(1, {"x": 1.0})
  writer.write_config(str(tmp_path), {"seed": 0})
  assert list(tmp_path.iterdir()) == []


def test_numpy_scalars_become_floats(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  writer = metric_writer.MetricWriter(str(tmp_path), tensorboard=False)
  writer.write_scalars(1, {"x": np.float32(0.25), "y": np.inf})
  record = metric_writer.read_metrics(str(tmp_path / "metrics.jsonl"))[0]
  assert record["x"] == 0.25 and not math.isfinite(float(record["y"]))


def _require_clu():
  """clu and tensorboard (the "clu" extra, which CI installs): a CI run without them fails instead of skipping."""
  import os  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  if os.environ.get("CI"):
    import clu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  pytest.importorskip("clu")
  return pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def test_tensorboard_event_files_hold_the_scalars(tmp_path):
  event_accumulator = _require_clu()
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  writer = metric_writer.MetricWriter(str(tmp_path))
  writer.write_scalars(1, {"train/loss": 2.5, "epoch": 0, "note": "not a number"})
  writer.write_scalars(3, {"train/loss": 1.25, "eval/mof": 61.0})
  writer.close()
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert len(events) == 1
  accumulator = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  accumulator.Reload()
  tags = accumulator.Tags()["tensors"]
  assert set(tags) == {"train/loss", "epoch", "eval/mof"}

  def series(tag):
    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]

  assert series("train/loss") == [(1, 2.5), (3, 1.25)]
  assert series("eval/mof") == [(3, 61.0)]
  assert np.isclose(series("epoch")[0][1], 0.0)
  # The JSONL log is the same with TensorBoard on.
  assert [r["step"] for r in metric_writer.read_metrics(str(tmp_path / "metrics.jsonl"))] == [1, 3]
