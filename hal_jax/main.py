r"""Entry point: train, evaluate or predict with one experiment config.

  python -m hal_jax.main --config=configs/atba.py --workdir=/tmp/atba                   # train (+ eval)
  python -m hal_jax.main --config=configs/atba.py --workdir=/tmp/atba --mode=eval       # score the last checkpoint
  python -m hal_jax.main --config=configs/atba.py --workdir=/tmp/atba --mode=predict    # <video>.txt + PNG plots

`--config=configs/atba.py:test` selects a preset; `--config.num_epochs=10` overrides a key. On bad input (data,
config, workdir) it prints one line ``error: <file or key>: <problem>`` and exits with status 2; `--verbose` adds
the traceback.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from hal_jax import errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/<method>.py[:preset]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, predictions.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict"], "What to do.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Print tracebacks of bad-input errors.")

# The columns of the results table printed after training and evaluation (segmentation, 0-100).
_TABLE_KEYS = ("mof", "mof_bg", "iou", "iod", "iou_tasl", "iod_tasl", "edit", "f1@10", "f1@25", "f1@50")


def results_table(metrics: dict[str, float]) -> str:
  """A two-line Markdown-style table of the headline metrics."""
  keys = [k for k in _TABLE_KEYS if k in metrics]
  header = "| " + " | ".join(keys) + " |"
  values = "| " + " | ".join(f"{metrics[k]:.1f}" for k in keys) + " |"
  return "\n".join([header, "|" + "---|" * len(keys), values])


def write_predictions(data, method, params, mesh, out_dir: str) -> int:
  """Writes ``<out_dir>/<video>.txt`` (one label name per raw frame) and ``<out_dir>/plots/<video>.png``."""
  from hal_jax import plotting  # pylint: disable=g-import-not-at-top  (matplotlib only when plotting)
  from hal_jax import train  # pylint: disable=g-import-not-at-top
  from hal_jax.data import formats  # pylint: disable=g-import-not-at-top
  predicted = data.predicted_labels(train.predict_batches(method, params, data.test_pipeline, mesh))
  os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
  names = data.label_map.names
  for video in data.test.videos:
    labels = predicted[video.name]
    formats.write_frame_labels(os.path.join(out_dir, f"{video.name}.txt"), [names[i] for i in labels])
    plotting.plot_segmentation(os.path.join(out_dir, "plots", f"{video.name}.png"), video.labels, labels, names,
                               title=video.name)
  return len(predicted)


def run(config, workdir: str, mode: str) -> dict:
  """Runs `mode` and returns what it prints as JSON."""
  import jax  # pylint: disable=g-import-not-at-top  (after flags: JAX reads its own flags and env at import)
  from hal_jax import train  # pylint: disable=g-import-not-at-top
  logging.info("JAX devices: %s", jax.devices())
  if mode == "train":
    result = train.train_and_evaluate(config, workdir)
    return {"step": result.steps, **result.eval_metrics}
  data, method, params, mesh, step = train.restore_trained(config, workdir)
  if mode == "eval":
    return {"step": step, **train.evaluate(method, params, data, mesh)}
  out_dir = os.path.join(workdir, "predictions")
  count = write_predictions(data, method, params, mesh, out_dir)
  return {"step": step, "videos": count, "predictions": out_dir}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _VERBOSE.value:
    # Orbax and JAX log every checkpoint step at INFO; the progress bar and metrics.jsonl say what matters.
    logging.set_verbosity(logging.WARNING)
  with errors.exit_on_bad_input(verbose=_VERBOSE.value):
    if _CONFIG.value is None:
      raise errors.ConfigError("--config", "is required (e.g. --config=configs/hal.py)")
    if not _WORKDIR.value:
      raise errors.ConfigError("--workdir", "is required")
    outputs = run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  if _MODE.value in ("train", "eval") and "mof" in outputs:
    print(results_table(outputs), file=sys.stderr)
  print(json.dumps(outputs, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
