"""benchmarks/pose_study.py: the runs' configs, pairing, the report, and skipping finished runs."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import pose_study  # pylint: disable=wrong-import-position

_TINY = ["--data_preset=pose_test", "--config_preset=test", "--num_train=4", "--num_test=2",
         "--duration_range=10,40", "--background_duration=8", "--epochs=2", "--bucket_multiple=64",
         "--max_positions=64", "--seeds=0,1", "--modes=online", "--losses=none,filtered", "--vanilla_modes=online"]


def _record(seed, mode, loss, mof):
  return {"seed": seed, "mode": mode, "loss": loss, "mof": mof, "iou_pred": 10.0, "edit": 50.0, "f1@50": 20.0}


def test_differences_are_paired_by_seed_and_mode():
  records = [_record(s, "online", "none", 60.0 + s) for s in range(3)]
  records += [_record(s, "online", "filtered", 62.0 + s) for s in range(3)]  # +2 on every seed
  records += [_record(0, "offline", "filtered", 99.0)]  # No offline baseline: no offline pair.
  records += [dict(_record(s, "online", "none", 59.0 + s), input="concat") for s in range(2)]  # −1, 2 seeds
  online = lambda loss, pose_input="rgb": ("online", loss, pose_input)
  assert pose_study.paired(records, online("filtered"), online("none"), "mof") == [2.0, 2.0, 2.0]
  assert not pose_study.paired(records, ("offline", "filtered", "rgb"), ("offline", "none", "rgb"), "mof")
  assert pose_study.paired(records, online("none", "concat"), online("none"), "mof") == [-1.0, -1.0]
  text = pose_study.table(records)
  assert "| online | none | rgb | 3 | 61.0 ± 1.0 | 10.0 ± 0.0 | 50.0 ± 0.0 | 20.0 ± 0.0 |" in text
  assert "| online | none | concat | 2 | 59.5 ± 0.7 |" in text
  assert "| online: filtered − none | 3 | +2.0 [+2.0, +2.0] helps | +0.0 [+0.0, +0.0] noise |" in text
  assert "| online: input concat − rgb (loss none) | 2 | -1.0 [-1.0, -1.0] hurts |" in text
  assert "| online: filtered − input concat (loss none) | 2 | +3.0 [+3.0, +3.0] helps |" in text
  assert "offline: filtered − none" not in text
  # iou_pred is NaN for a run without a predicted segment: left out of means and pairs, and said so.
  records += [dict(_record(s, "offline", "none", 20.0), input="pose", iou_pred=float("nan") if s else 4.0)
              for s in range(3)]
  records += [_record(s, "offline", "none", 30.0) for s in range(3)]
  text = pose_study.table(records)
  assert "| offline | none | pose | 3 | 20.0 ± 0.0 | 4.0 (1 of 3 defined) |" in text
  assert "| offline: input pose − rgb (loss none) | 3 | -10.0 [-10.0, -10.0] hurts | -6.0 one seed (n = 1) |" in text


def test_each_run_gets_its_config_and_data_and_finished_runs_are_skipped(tmp_path, monkeypatch):
  seen = []

  def fake_train(config, workdir):
    seen.append((config.seed, config.causal, config.use_poses, config.pose_delta, config.num_epochs,
                 config.data_dir, os.path.basename(workdir)))
    os.makedirs(workdir)
    return pose_study.train.TrainResult(state=None, eval_metrics={"mof": 50.0, "iou_pred": 1.0, "edit": 2.0,
                                                                  "f1@50": 3.0}, steps=4)

  monkeypatch.setattr(pose_study.train, "train_and_evaluate", fake_train)
  records = pose_study.main(_TINY + [f"--workdir={tmp_path}", f"--out={tmp_path / 'out'}"])
  # Seed-major, Table 3's vanilla runs last.
  assert [(r["seed"], r["loss"]) for r in records] == [(0, "none"), (0, "filtered"), (1, "none"), (1, "filtered"),
                                                       (0, "vanilla"), (1, "vanilla")]
  assert [s[:5] for s in seen[:2] + seen[4:5]] == [(0, True, False, 0.15, 2), (0, True, True, 0.15, 2),
                                                   (0, True, True, 0.0, 2)]
  assert {s[5] for s in seen[:2] + seen[4:5]} == {str(tmp_path / "data" / "s0")}
  assert seen[2][5] == str(tmp_path / "data" / "s1")
  assert os.path.isdir(tmp_path / "data" / "s0" / "poses")
  assert json.loads((tmp_path / "runs" / "s1_online_vanilla" / "result.json").read_text())["mof"] == 50.0

  def refuse(*unused):
    raise AssertionError("a finished run was trained again")

  monkeypatch.setattr(pose_study.train, "train_and_evaluate", refuse)
  assert pose_study.main(_TINY + [f"--workdir={tmp_path}"]) == records
  assert len((tmp_path / "out" / "runs.jsonl").read_text().splitlines()) == 6


def test_pose_input_runs_read_poses_without_the_pose_loss(tmp_path, monkeypatch):
  seen = []

  def fake_train(config, workdir):
    seen.append((config.method, config.use_poses, config.pose_input, os.path.basename(workdir)))
    os.makedirs(workdir)
    return pose_study.train.TrainResult(state=None, eval_metrics={"mof": 50.0, "iou_pred": 1.0, "edit": 2.0,
                                                                  "f1@50": 3.0}, steps=4)

  monkeypatch.setattr(pose_study.train, "train_and_evaluate", fake_train)
  records = pose_study.main(_TINY[:-3] + ["--seeds=0", "--modes=online", "--losses=none",
                                          "--pose_inputs=online:pose,online:concat:filtered", f"--workdir={tmp_path}"])
  assert seen == [("hal_jax.methods.atba", False, "rgb", "s0_online_none"),
                  ("hal_jax.methods.pose_input", True, "pose", "s0_online_none_pose"),
                  ("hal_jax.methods.pose", True, "concat", "s0_online_filtered_concat")]
  assert [(r["loss"], r["input"]) for r in records] == [("none", "rgb"), ("none", "pose"), ("filtered", "concat")]
  seen.clear()
  pose_study.main(_TINY[:-3] + ["--seeds=0", "--modes=online", "--losses=filtered", "--host=hal",
                               f"--workdir={tmp_path / 'hal'}"])
  assert seen == [("hal_jax.methods.pose", True, "rgb", "s0_online_filtered")]
  assert pose_study.run_config(pose_study.Sizes("pose_test", 4, 2, (10, 40), 8, "test", 2, 64, 64, "hal"), "online",
                               "none", 0, str(tmp_path / "data" / "s0")).method == "hal_jax.methods.hal"


def test_a_run_stopped_before_its_evaluation_is_not_finished(tmp_path, monkeypatch):
  monkeypatch.setattr(pose_study.train, "train_and_evaluate",
                      lambda config, workdir: pose_study.train.TrainResult(state=None, eval_metrics={}, steps=1))
  with pytest.raises(SystemExit, match="stopped at step 1"):
    pose_study.main(_TINY + [f"--workdir={tmp_path}"])
  assert not (tmp_path / "runs" / "s0_online_none" / "result.json").exists()
