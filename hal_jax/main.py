r"""Entry point: train, evaluate or predict with one experiment config.

  python -m hal_jax.main --config=configs/hal.py --workdir=/tmp/run                     # train (+ eval)
  python -m hal_jax.main --config=configs/hal.py --workdir=/tmp/run --mode=eval         # score the last checkpoint
  python -m hal_jax.main --config=configs/hal.py --workdir=/tmp/run --mode=predict      # prediction files + plots
  python -m hal_jax.main --config=configs/hal.py --workdir=/tmp/run --mode=predict --peer_formats   # + MS-TCN files

`--config=FILE:preset[,key=value...]` selects a preset (`hal_jax.config_args`); `--config.num_epochs=10` overrides a
key. On bad input (flags, config, data, workdir) it prints one line ``error: <file, flag or key>: <problem>`` and
exits with status 2 (flag errors: `hal_jax.cli_flags`); `--verbose` adds the traceback. Every mode holds the
workdir's lock (`hal_jax.workdir`), so a second run on the same workdir is refused while the first one lives.

Many hosts (README "Running on many machines"): every host runs the same command plus

  --distributed                                     # Cloud TPU pods, SLURM, Open MPI: JAX detects the rest
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I    # anywhere else (I differs per process)

and the processes join one job before anything touches a device. Process 0 holds the workdir lock and writes the
logs, config.json, plots and predictions and prints the results; checkpoints are written by all of them together.
"""

from __future__ import annotations

import dataclasses
import json
import logging as std_logging
import os
import sys

import ml_collections
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from hal_jax import cli_flags
from hal_jax import errors
from hal_jax import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config: FILE[:preset[,key=value...]].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, predictions.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict"], "What to do.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Print tracebacks of bad-input errors.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-process job (one process per host), taking what --coordinator_address, "
    "--num_processes and --process_id do not give from the environment (Cloud TPU pods, SLURM, Open MPI, "
    "JAX_COORDINATOR_ADDRESS), as jax.distributed.initialize does.")
_COORDINATOR_ADDRESS = flags.DEFINE_string("coordinator_address", None,
                                           "Multi-process job: host:port of process 0's coordinator service.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process job: the number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process job: this process's index, 0 .. N-1.")
_PEER_FORMATS = flags.DEFINE_bool(
    "peer_formats", False, "--mode=predict: also write the files the field's reference evaluators read unchanged: "
    "MS-TCN result files in <workdir>/predictions/mstcn/ (segmentation), ActivityNet detection JSON "
    "<workdir>/predictions/activitynet.json (localization). See hal_jax.peer_formats.")
_START_OVER = flags.DEFINE_bool(
    "start_over", False, "--mode=train: when the workdir holds checkpoints but none of them restores, train from "
    "step 0 and move them to <workdir>/checkpoints.unreadable/ (without it the run stops and changes nothing).")

# The columns of the results table printed after training and evaluation (0-100): segmentation, then detection
# (whose mAP@tIoU columns come first, in threshold order) and the latent probes of synthetic data.
_TABLE_KEYS = ("mof", "mof_bg", "iou", "iod", "iou_tasl", "iod_tasl", "iou_pred", "edit", "f1@10", "f1@25", "f1@50",
               "average_map", "coarse_average_map", "change_point_f1", "mcc_action", "mcc_visual",
               "acc_l1", "acc_l2", "acc_l3", "acc_l1_flat", "acc_l2_flat", "acc_l3_flat", "path_acc", "macro_f1")


def results_table(metrics: dict[str, float]) -> str:
  """A Markdown table of the headline metrics present in `metrics`."""
  keys = sorted(k for k in metrics if k.startswith("map@")) + [k for k in _TABLE_KEYS if k in metrics]
  header = "| " + " | ".join(keys) + " |"
  values = "| " + " | ".join(f"{metrics[k]:.1f}" for k in keys) + " |"
  return "\n".join([header, "|" + "---|" * len(keys), values])


@dataclasses.dataclass(frozen=True)
class Processes:
  """How this process joins a multi-process job (the flags --distributed, --coordinator_address, ...).

  The default is a single-process run. See `hal_jax.sharding.initialize_distributed`.
  """
  distributed: bool = False
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


def join_job(processes: Processes) -> bool:
  """Joins the multi-process job `processes` asks for (before anything touches a device); True on process 0.

  Raises:
    ConfigError: naming the flag, for an incomplete or out-of-range multi-process setting.
  """
  from hal_jax import sharding  # pylint: disable=g-import-not-at-top  (imports JAX, after flags and config checks)
  try:
    joined = sharding.initialize_distributed(processes.coordinator_address, processes.num_processes,
                                             processes.process_id, auto_detect=processes.distributed)
  except errors.ConfigError as error:
    raise errors.ConfigError(f"--{error.where}", error.what) from None
  if not joined:
    return True  # Without a job, asking JAX would start its backend before the lock is checked.
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("Process %d of %d", jax.process_index(), jax.process_count())
  return jax.process_index() == 0


def run(config: ml_collections.ConfigDict, workdir: str, mode: str, processes: Processes = Processes(),
        start_over: bool = False, peer_formats: bool = False) -> dict:
  """Runs `mode` in `workdir` (holding its lock) and returns what it prints as JSON.

  `peer_formats` (``--mode=predict`` only): also write the task's peer-format files (`hal_jax.peer_formats`).

  Raises:
    HalJaxError: bad input (config, data, workdir, checkpoint, multi-process flags) or a non-finite loss.
  """
  if peer_formats and mode != "predict":
    raise errors.ConfigError("--peer_formats", f"writes prediction files: use it with --mode=predict, not {mode}")
  primary = join_job(processes)
  if peer_formats:  # Checked before the workdir is touched or anything is predicted.
    from hal_jax import peer_formats as peer_formats_lib  # pylint: disable=g-import-not-at-top
    from hal_jax.methods import base  # pylint: disable=g-import-not-at-top  (imports JAX, after join_job)
    peer_formats_lib.check_task(base.method_task(config).value)
  with workdir_lib.locked_workdir(workdir, create=mode == "train", primary=primary):
    import jax  # pylint: disable=g-import-not-at-top  (after flags: JAX reads its own flags and env at import)
    from hal_jax import inference  # pylint: disable=g-import-not-at-top
    from hal_jax import train  # pylint: disable=g-import-not-at-top
    logging.info("JAX devices: %s", jax.devices())  # The config is checked once, by train / inference.
    if mode == "train":
      result = train.train_and_evaluate(config, workdir, start_over=start_over)
      return {"step": result.steps, **result.eval_metrics}
    data, method, params, mesh, step = inference.restore_trained(config, workdir)
    if mode == "eval":
      return {"step": step, **inference.evaluate_test(method, params, data, mesh)}
    out_dir = os.path.join(workdir, "predictions")
    predictions = inference.predict_batches(method, params, data.test_pipeline, mesh)
    if not primary:
      for _ in predictions:  # Every process takes part in each prediction step; process 0 writes the files.
        pass
      return {"step": step}
    count = data.write_predictions(predictions, out_dir, peer_formats=peer_formats)
    outputs = {"step": step, "videos": count, "predictions": out_dir}
    if peer_formats:
      outputs["peer_formats"] = os.path.join(out_dir, peer_formats_lib.PREDICTION_FILES[base.method_task(config).value])
    return outputs


def execute(config: ml_collections.ConfigDict | None, workdir: str | None, mode: str, *,
            verbose: bool = False, leave_at_once: bool = False, processes: Processes = Processes(),
            start_over: bool = False, peer_formats: bool = False) -> dict:
  """`run` as the command line does it: results on stdout (process 0); bad input is one line on stderr and exit
  status 2.

  Raises:
    SystemExit: with status 2 on bad input.
  """
  with errors.exit_on_bad_input(verbose=verbose, leave_at_once=leave_at_once):
    if config is None:
      raise errors.ConfigError("--config", "is required (e.g. --config=configs/hal.py)")
    if not workdir:
      raise errors.ConfigError("--workdir", "is required")
    outputs = run(config, workdir, mode, processes, start_over, peer_formats)
  import jax  # pylint: disable=g-import-not-at-top  (imported by `run`)
  if jax.process_index() != 0:
    return outputs  # Every process computed the same numbers; process 0 reports them.
  if mode in ("train", "eval") and any(k.startswith("map@") or k in ("mof", "path_acc") for k in outputs):
    print(results_table(outputs), file=sys.stderr)
  print(json.dumps(outputs, sort_keys=True))
  return outputs


class _WithoutTracebacks(std_logging.Filter):
  """Keeps log records but drops their tracebacks (Orbax logs one for a failed write that it also raises)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    record.exc_info = None
    record.exc_text = None
    return True


def main(argv):
  if not _VERBOSE.value:
    # Orbax and JAX log every checkpoint step at INFO; the progress bar and metrics.jsonl say what matters.
    logging.set_verbosity(logging.WARNING)
    logging.get_absl_handler().addFilter(_WithoutTracebacks())
  if len(argv) > 1:
    with errors.exit_on_bad_input(verbose=_VERBOSE.value):
      raise errors.ConfigError("command line", f"unexpected arguments {argv[1:]} (flags are --name=value)")
  # On bad input the process leaves right after the one-line error (the workdir lock dies with it).
  processes = Processes(distributed=_DISTRIBUTED.value, coordinator_address=_COORDINATOR_ADDRESS.value,
                        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  execute(_CONFIG.value, _WORKDIR.value, _MODE.value, verbose=_VERBOSE.value, leave_at_once=True,
          processes=processes, start_over=_START_OVER.value, peer_formats=_PEER_FORMATS.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli_flags.parse_flags)
