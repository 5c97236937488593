"""The data of one recognition experiment: trimmed clips, one class per level of a taxonomy (spec hclip.md §2, §7).

`load(config, workdir)` reads the recognition directory `config.data_dir` (layout: hal_jax.data.recognition_formats;
with an empty `data_dir` the preset `config.synthetic_preset` of hal_jax.data.synthetic_recognition is generated into
``<workdir>/data`` once), validates every file, and builds the pipelines (hal_jax.data.recognition_pipeline) before
anything is trained. `score` turns the method's ``filtered`` / ``flat`` / ``joint`` path predictions into the metrics
of `hal_jax.metrics.recognition`; `write_predictions` writes them as ``predictions.tsv``, the file that
``python -m hal_jax.evaluate --task=recognition`` reads.

Model selection: `config.validation_fraction` of the training patients (a seeded draw, whole patients) are held out
and scored by `score_validation`; they are never trained on.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from hal_jax import errors
from hal_jax import peer_formats as peer_formats_lib
from hal_jax.data import recognition_formats as rf
from hal_jax.data import recognition_pipeline
from hal_jax.data import staging as staging_lib
from hal_jax.data import strict_files
from hal_jax.data import synthetic
from hal_jax.data import synthetic_recognition
from hal_jax.metrics import recognition as recognition_metrics
from hal_jax.tasks.base import Pairs

PREDICTIONS_FILE = "predictions.tsv"
# The path columns of predictions.tsv: <prefix>_l1 .. <prefix>_lL per kind of inference.
PREDICTION_KINDS = ("filtered", "flat", "joint")
_VALIDATION_STREAM = 5


def predicted_paths(predictions: Pairs, dataset: rf.RecognitionDataset) -> dict[str, np.ndarray]:
  """kind -> [N, L] int64 paths of every clip of `dataset` (in its order) from `(batch, outputs)` pairs.

  Raises:
    ValueError: a clip without a prediction.
  """
  levels = dataset.taxonomy.num_levels
  paths = {kind: np.full([len(dataset.videos), levels], -1, np.int64) for kind in PREDICTION_KINDS}
  seen = np.zeros([len(dataset.videos)], bool)
  for batch, outputs in predictions:
    rows = np.flatnonzero(batch["batch_mask"])
    index = np.asarray(batch["video_index"])[rows]
    for kind in PREDICTION_KINDS:
      paths[kind][index] = np.asarray(outputs[kind])[rows]
    seen[index] = True
  if not seen.all():
    missing = [dataset.videos[i].name for i in np.flatnonzero(~seen)]
    raise ValueError(f"no prediction for {len(missing)} clips of subset {dataset.subset!r}, e.g. {missing[0]}")
  return paths


def scores_of(labels: np.ndarray, paths: dict[str, np.ndarray], taxonomy: rf.Taxonomy) -> dict[str, float]:
  return recognition_metrics.recognition_scores(labels, paths["filtered"], paths["flat"], taxonomy.parents,
                                                joint=paths.get("joint"), leaf_values=taxonomy.leaf_values)


@dataclasses.dataclass
class RecognitionData:
  """Validated subsets, their pipelines and the scoring of path predictions (the `ExperimentData` protocol).

  Attributes:
    data_dir: the recognition directory that was read.
    taxonomy: its classes, parent maps and (optional) class texts.
    label_map: ``names`` are the leaf names, carrying the taxonomy (`rf.TaxonomyNames`).
    train, test, validation: the subsets (validation: held-out training patients, or None).
  """
  data_dir: str
  taxonomy: rf.Taxonomy
  train: rf.RecognitionDataset
  test: rf.RecognitionDataset
  train_pipeline: recognition_pipeline.RecognitionPipeline
  test_pipeline: recognition_pipeline.RecognitionPipeline
  train_eval_pipeline: recognition_pipeline.RecognitionPipeline
  validation: rf.RecognitionDataset | None = None
  validation_pipeline: recognition_pipeline.RecognitionPipeline | None = None

  @property
  def label_map(self):
    return self.taxonomy

  @property
  def has_true_latents(self) -> bool:
    return False

  def score(self, predictions: Pairs) -> dict[str, float]:
    """The recognition metrics (0-100; score_mae in leaf-value units) of the test subset."""
    return scores_of(self.test.labels, predicted_paths(predictions, self.test), self.taxonomy)

  def score_validation(self, predictions: Pairs) -> dict[str, float]:
    return scores_of(self.validation.labels, predicted_paths(predictions, self.validation), self.taxonomy)

  def write_predictions(self, predictions: Pairs, out_dir: str, peer_formats: bool = False) -> int:
    """Writes ``<out_dir>/predictions.tsv`` (clip_id, then the class names of every kind of path); the directory
    appears whole. Returns the number of clips. Recognition has no peer format (`peer_formats` must be False)."""
    if peer_formats:
      peer_formats_lib.check_task("recognition")
    paths = predicted_paths(predictions, self.test)
    levels = self.taxonomy.num_levels
    header = ("clip_id",) + tuple(f"{kind}_l{l}" for kind in PREDICTION_KINDS for l in range(1, levels + 1))
    rows = [(clip.name, *(name for kind in PREDICTION_KINDS for name in rf.label_names(self.taxonomy, paths[kind][i])))
            for i, clip in enumerate(self.test.videos)]
    with staging_lib.staged_directory(out_dir, overwrite=True) as staged:
      strict_files.write_tsv(os.path.join(staged, PREDICTIONS_FILE), header, rows)
    return len(rows)


def read_predictions(path: str, taxonomy: rf.Taxonomy) -> dict[str, dict[str, np.ndarray]]:
  """clip -> kind -> [L] int32 path of a predictions.tsv (the inverse of `RecognitionData.write_predictions`)."""
  return rf.read_label_rows(path, taxonomy, {kind: taxonomy.num_levels for kind in PREDICTION_KINDS})


def resolve_data_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`config.data_dir`, or the synthetic preset generated (once) into ``<workdir>/data``."""
  if config.data_dir:
    if not os.path.isdir(config.data_dir):
      raise errors.DataError(config.data_dir, "data directory does not exist (config.data_dir)")
    return config.data_dir
  presets = synthetic_recognition.PRESETS
  if config.synthetic_preset not in presets:
    raise errors.ConfigError("config.synthetic_preset",
                             f"unknown recognition preset {config.synthetic_preset!r}; choose one of {sorted(presets)}")
  return synthetic.ensure_generated(os.path.join(workdir, "data"), presets[config.synthetic_preset])


def hold_out_patients(dataset: rf.RecognitionDataset, fraction: float, seed: int
                      ) -> tuple[rf.RecognitionDataset, rf.RecognitionDataset | None]:
  """(train without them, held-out clips) for `fraction` of the patients (at least one), or (dataset, None)."""
  if fraction <= 0:
    return dataset, None
  patients = sorted({c.patient for c in dataset.videos})
  count = max(1, int(round(fraction * len(patients))))
  if count >= len(patients):
    raise errors.ConfigError("config.validation_fraction", f"{fraction} holds out all {len(patients)} training "
                             "patients")
  rng = np.random.default_rng((seed, _VALIDATION_STREAM))
  held = {patients[i] for i in rng.choice(len(patients), count, replace=False)}
  keep = tuple(c for c in dataset.videos if c.patient not in held)
  out = tuple(c for c in dataset.videos if c.patient in held)
  return (dataclasses.replace(dataset, videos=keep),
          dataclasses.replace(dataset, subset=f"{dataset.subset} (validation)", videos=out))


def load(config: ml_collections.ConfigDict, workdir: str) -> RecognitionData:
  """Reads, validates and wraps the data of `config` (see the module docstring)."""
  data_dir = resolve_data_dir(config, workdir)
  taxonomy, subsets = rf.load_directory(data_dir)
  for name in (config.train_subset, config.test_subset):
    if name not in subsets:
      raise errors.DataError(os.path.join(data_dir, rf.CLIPS_FILE), f"no clips of subset {name!r} (subsets: "
                             f"{sorted(subsets)})")
  if config.text_free:
    taxonomy = dataclasses.replace(taxonomy, text=None)
    subsets = {k: dataclasses.replace(v, taxonomy=taxonomy) for k, v in subsets.items()}
  train, validation = hold_out_patients(subsets[config.train_subset], config.validation_fraction, config.seed)
  test = subsets[config.test_subset]
  common = dict(batch_size=config.batch_size, seed=config.seed, num_frames=config.num_frames)
  return RecognitionData(
      data_dir=data_dir, taxonomy=taxonomy, train=train, test=test,
      train_pipeline=recognition_pipeline.RecognitionPipeline(train, train=True, **common),
      test_pipeline=recognition_pipeline.RecognitionPipeline(test, train=False, **common),
      train_eval_pipeline=recognition_pipeline.RecognitionPipeline(train, train=False, **common),
      validation=validation,
      validation_pipeline=(None if validation is None else
                           recognition_pipeline.RecognitionPipeline(validation, train=False, **common)))
