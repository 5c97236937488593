r"""Entry point: train, evaluate or predict with one experiment config.

  python -m hal_jax.main --config=configs/atba.py --workdir=/tmp/atba                   # train (+ eval)
  python -m hal_jax.main --config=configs/atba.py --workdir=/tmp/atba --mode=eval       # score the last checkpoint
  python -m hal_jax.main --config=configs/atba.py --workdir=/tmp/atba --mode=predict    # <video>.txt + PNG plots

`--config=configs/atba.py:test` selects a preset; `--config.num_epochs=10` overrides a key. On bad input (flags,
config, data, workdir) it prints one line ``error: <file, flag or key>: <problem>`` and exits with status 2;
`--verbose` adds the traceback. Every mode holds the workdir's lock (`hal_jax.workdir`), so a second run on the same
workdir is refused while the first one lives.

Many hosts (README "Running on many machines"): every host runs the same command plus

  --distributed                                     # Cloud TPU pods, SLURM, Open MPI: JAX detects the rest
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I    # anywhere else (I differs per process)

and the processes join one job before anything touches a device. Process 0 holds the workdir lock and writes the
logs, config.json, plots and predictions and prints the results; checkpoints are written by all of them together.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging as std_logging
import os
import re
import sys

import ml_collections
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from hal_jax import errors
from hal_jax import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/<method>.py[:preset]).",
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

# The columns of the results table printed after training and evaluation (0-100): segmentation, then detection
# (whose mAP@tIoU columns come first, in threshold order) and the latent probes of synthetic data.
_TABLE_KEYS = ("mof", "mof_bg", "iou", "iod", "iou_tasl", "iod_tasl", "edit", "f1@10", "f1@25", "f1@50",
               "average_map", "coarse_average_map", "change_point_f1", "mcc_action", "mcc_visual",
               "acc_l1", "acc_l2", "acc_l3", "acc_l1_flat", "acc_l2_flat", "acc_l3_flat", "path_acc", "macro_f1")


def results_table(metrics: dict[str, float]) -> str:
  """A Markdown table of the headline metrics present in `metrics`."""
  keys = sorted(k for k in metrics if k.startswith("map@")) + [k for k in _TABLE_KEYS if k in metrics]
  header = "| " + " | ".join(keys) + " |"
  values = "| " + " | ".join(f"{metrics[k]:.1f}" for k in keys) + " |"
  return "\n".join([header, "|" + "---|" * len(keys), values])


# ----------------------------------------------------------------------------------------------------------------------
# Flag parsing with one-line errors. absl prints a multi-line "FATAL Flags parsing error" (or a traceback, for an
# unknown config key) and exits with 1; here every flag problem is a `ConfigError` like any other bad input.


def _verbose_requested(argv: list[str]) -> bool:
  """Whether `argv` asks for --verbose; read before absl parses it, so that parse errors honour it too."""
  verbose = False
  for arg in argv[1:]:
    if arg == "--":
      break
    match = re.fullmatch(r"--?(no)?verbose(?:=(.*))?", arg)
    if match:
      verbose = match.group(1) is None and (match.group(2) or "true").lower() in ("true", "t", "1")
  return verbose


def _config_argument(argv: list[str]) -> str | None:
  """The value of the last --config flag in `argv` (``FILE[:ARG]``), or None."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg == "--":
      break
    match = re.fullmatch(r"--?config(?:=(.*))?", arg)
    if match:
      value = match.group(1) if match.group(1) is not None else (argv[i + 1] if i + 1 < len(argv) else None)
  return value


def _override_paths(argv: list[str]) -> list[str]:
  """The dotted key paths of the ``--config.<path>[=value]`` overrides in `argv`, in order."""
  paths = []
  for arg in argv[1:]:
    if arg == "--":
      break
    match = re.match(r"--?(?:no)?config\.([^=]+)", arg)
    if match:
      paths.append(match.group(1))
  return paths


def _root_message(error: BaseException) -> str:
  """The message of the innermost exception in `error`'s chain that has one (the original problem)."""
  message = str(error)
  cause = error.__cause__ or error.__context__
  while cause is not None:
    if str(cause):
      message = str(cause)
    cause = cause.__cause__ or cause.__context__
  return message


def _load_config(argument: str) -> ml_collections.ConfigDict | errors.ConfigError:
  """The config of ``--config=<argument>``, or the ConfigError that says why it cannot be loaded."""
  where = f"--config={argument}"
  path = argument.split(":", 1)[0]
  if not os.path.isfile(path):
    return errors.ConfigError(where, "config file not found")
  try:
    config = flags.FLAGS["config"].parser.parse(argument)
  except Exception as error:  # pylint: disable=broad-except  (whatever the config file raised is its problem)
    return errors.ConfigError(where, _root_message(error))
  if isinstance(config, ml_collections.ConfigDict):
    return config
  try:
    config.lock()  # config_flags defers the error of an unreadable file until the config is used.
  except OSError as error:
    return errors.ConfigError(where, f"cannot load the config file ({_root_message(error)})")
  return errors.ConfigError(where, f"get_config() returned {type(config).__name__}, not a ConfigDict")


def _lookup(config: ml_collections.ConfigDict, path: str) -> tuple[object | None, str | None]:
  """(value at dotted `path`, None) or (None, the problem: an unknown key, with the closest known key)."""
  node = config
  parts = path.split(".")
  for depth, key in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(key, known, n=1)
      hint = f" (did you mean {'.'.join(parts[:depth] + close)!r}?)" if close else ""
      return None, f"unknown config key {'.'.join(parts[:depth + 1])!r}{hint}"
    node = node[key]
  return node, None


def _type_name(value: object) -> str:
  if isinstance(value, bool):
    return "true or false"
  return {int: "an integer", float: "a number", str: "a string"}.get(type(value), f"a {type(value).__name__}")


def _flag_error(argv: list[str], error: Exception) -> errors.ConfigError:
  """The one-line ConfigError for `error`, raised by absl while parsing `argv`."""
  if isinstance(error, flags.UnrecognizedFlagError):
    name = error.flagname
    if name.startswith("config.") and _config_argument(argv) is None:
      return errors.ConfigError(f"--{name}", "overrides a config key, but no --config=FILE comes before it")
    close = difflib.get_close_matches(name, list(flags.FLAGS), n=1)
    return errors.ConfigError(f"--{name}", f"unknown flag (did you mean --{close[0]}?)" if close else "unknown flag")
  argument = _config_argument(argv)
  if argument is not None:
    config = _load_config(argument)
    if isinstance(config, errors.ConfigError):
      return config
    for path in _override_paths(argv):
      _, problem = _lookup(config, path)
      if problem:
        return errors.ConfigError(f"--config.{path}", problem)
    # A known key with a value of the wrong type: "flag --config.<path>=<value>: <parser message>".
    match = re.match(r"flag --config\.([^=]+)=(.*?): ", str(error), re.DOTALL)
    if isinstance(error, flags.IllegalFlagValueError) and match:
      current, _ = _lookup(config, match.group(1))
      return errors.ConfigError(f"--config.{match.group(1)}",
                                f"expected {_type_name(current)}, got {match.group(2)!r}")
  match = re.search(r"flag --([\w.\-]+)", str(error))
  where = f"--{match.group(1)}" if match else "command line"
  if str(error).startswith("Missing value for flag"):
    return errors.ConfigError(where, "missing value (write --name=value)")
  return errors.ConfigError(where, _root_message(error))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run`'s `flags_parser`), every error one line with exit status 2."""
  with errors.exit_on_bad_input(verbose=_verbose_requested(argv)):
    try:
      remaining = flags.FLAGS(argv)
    except Exception as error:  # pylint: disable=broad-except  (flags, config files and overrides are input)
      raise _flag_error(argv, error) from error
    argument = _config_argument(argv)
    if argument is not None and not isinstance(_CONFIG.value, ml_collections.ConfigDict):
      problem = _load_config(argument)
      if isinstance(problem, errors.ConfigError):
        raise problem
  return remaining


# ----------------------------------------------------------------------------------------------------------------------
# Running.


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


def run(config: ml_collections.ConfigDict, workdir: str, mode: str, processes: Processes = Processes()) -> dict:
  """Runs `mode` in `workdir` (holding its lock) and returns what it prints as JSON.

  Raises:
    HalJaxError: bad input (config, data, workdir, checkpoint, multi-process flags) or a non-finite loss.
  """
  workdir_lib.validate_config(config)  # Before importing JAX: an impossible value fails in a fraction of a second.
  primary = join_job(processes)
  with workdir_lib.locked_workdir(workdir, create=mode == "train", primary=primary):
    import jax  # pylint: disable=g-import-not-at-top  (after flags: JAX reads its own flags and env at import)
    from hal_jax import train  # pylint: disable=g-import-not-at-top
    logging.info("JAX devices: %s", jax.devices())
    workdir_lib.check_batch_size(config, jax.device_count())
    if mode == "train":
      result = train.train_and_evaluate(config, workdir)
      return {"step": result.steps, **result.eval_metrics}
    data, method, params, mesh, step = train.restore_trained(config, workdir)
    if mode == "eval":
      return {"step": step, **train.evaluate(method, params, data, mesh)}
    out_dir = os.path.join(workdir, "predictions")
    predictions = train.predict_batches(method, params, data.test_pipeline, mesh)
    if not primary:
      for _ in predictions:  # Every process takes part in each prediction step; process 0 writes the files.
        pass
      return {"step": step}
    count = data.write_predictions(predictions, out_dir)
    return {"step": step, "videos": count, "predictions": out_dir}


def execute(config: ml_collections.ConfigDict | None, workdir: str | None, mode: str, *,
            verbose: bool = False, leave_at_once: bool = False, processes: Processes = Processes()) -> dict:
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
    outputs = run(config, workdir, mode, processes)
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
          processes=processes)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
