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
