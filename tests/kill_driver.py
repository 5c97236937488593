"""`python -m hal_jax.main` that kills itself at one chosen point, for tests/fault_tolerance_test.py.

  KILL_AT=<point>:<n> KILL_LOG=<file> python tests/kill_driver.py <hal_jax.main flags>

`n` counts the events of this process, from 1. Points:

  step        SIGKILL while the n-th train step runs: JAX dispatches the step asynchronously, so when the call returns
              the step is still computing (with the previous state's buffers donated to it).
  commit      SIGKILL inside the n-th checkpoint save, after Orbax wrote every item and its commit file into the
              temporary directory and right before it renames that directory to the step's name.
  after_save  SIGKILL right after the n-th save returned (the step directory is final).
  eval        SIGKILL inside the n-th evaluation, once the first batch is predicted and before it is scored.
  restore     SIGKILL inside the n-th restore of a train state (start-up: the metadata is read, the arrays are not).
  sigterm     SIGTERM (what a preemption or `kill` sends) while the n-th train step runs; the run goes on to handle it.
  sigint      SIGINT (Ctrl-C) while the n-th train step runs; handled like SIGTERM.
  plot        SIGKILL right after the n-th prediction plot is written (--mode=predict, segmentation: in the middle of
              writing the prediction set).

The kills come from outside hal_jax: the hooks wrap library functions before `hal_jax.main` runs, so production code
has no kill switch. Before the signal, one line saying where it landed is appended to KILL_LOG, so that the test can
check that the kill hit the point it asked for.
"""

import functools
import os
import signal
import sys

import jax
import orbax.checkpoint as ocp
from absl import app
from orbax.checkpoint._src.path import async_path

from hal_jax import checkpoint
from hal_jax import cli_flags
from hal_jax import main
from hal_jax import inference
from hal_jax import plotting

_TMP_SUFFIX = ".orbax-checkpoint-tmp"


def _signal(where: str, sig: int = signal.SIGKILL) -> None:
  """Logs `where` and sends `sig` to this process (SIGKILL: no handler, no cleanup, no flush)."""
  with open(os.environ["KILL_LOG"], "a", encoding="utf-8") as log:
    log.write(where + "\n")
  os.kill(os.getpid(), sig)


class _Counter:
  """Counts the events of the chosen point; `hit()` is True at the n-th."""

  def __init__(self, n: int):
    self.n, self.count = n, 0

  def hit(self) -> bool:
    self.count += 1
    return self.count == self.n


def _hook_step(counter: _Counter, sig: int) -> None:
  """Wraps the jitted train step: `hal_jax.train` jits functions named train_step through `jax.jit`."""
  jit = jax.jit

  def patched_jit(fn, *args, **kwargs):
    jitted = jit(fn, *args, **kwargs)
    if getattr(fn, "__name__", "") != "train_step":
      return jitted

    @functools.wraps(fn)
    def step(state, batch):
      outputs = jitted(state, batch)
      if counter.hit():
        running = not all(leaf.is_ready() for leaf in jax.tree.leaves(outputs))
        _signal(f"step {counter.n} {'running' if running else 'finished'}", sig)
      return outputs

    return step

  jax.jit = patched_jit


def _hook_commit(counter: _Counter) -> None:
  rename = async_path.rename

  async def patched_rename(src, dst):
    # Items are renamed inside the step's temporary directory first; the step's own rename (to its number) is last.
    if _TMP_SUFFIX in os.path.basename(str(src)) and os.path.basename(str(dst)).isdigit() and counter.hit():
      committed = os.path.exists(os.path.join(str(src), "commit_success.txt"))
      _signal(f"commit {os.path.basename(str(dst))} before rename{' (commit file written)' if committed else ''}")
    return await rename(src, dst)

  async_path.rename = patched_rename


def _hook_after_save(counter: _Counter) -> None:
  save = checkpoint.Checkpointer.save

  def patched_save(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    if counter.hit():
      _signal(f"after save {step}")

  checkpoint.Checkpointer.save = patched_save


def _hook_eval(counter: _Counter) -> None:
  predict_batches = inference.predict_batches

  def patched_predict_batches(*args, **kwargs):
    hit = counter.hit()
    for batch_count, pair in enumerate(predict_batches(*args, **kwargs), 1):
      yield pair
      if hit:
        _signal(f"eval after {batch_count} predicted batch(es)")

  inference.predict_batches = patched_predict_batches


def _hook_plot(counter: _Counter) -> None:
  plot_segmentation = plotting.plot_segmentation

  def patched_plot_segmentation(path, *args, **kwargs):
    plot_segmentation(path, *args, **kwargs)
    if counter.hit():
      _signal(f"plot {counter.n} written")

  plotting.plot_segmentation = patched_plot_segmentation


def _hook_restore(counter: _Counter) -> None:
  restore = ocp.CheckpointManager.restore

  def patched_restore(self, step, *args, **kwargs):
    items = kwargs.get("args") or (args[0] if args else None)
    if items is not None and "state" in items and counter.hit():
      _signal(f"restore {step}")
    return restore(self, step, *args, **kwargs)

  ocp.CheckpointManager.restore = patched_restore


def install(spec: str) -> None:
  """Installs the hook of `spec` (``<point>:<n>``)."""
  point, n = spec.split(":")
  counter = _Counter(int(n))
  hooks = {
      "step": lambda: _hook_step(counter, signal.SIGKILL),
      "sigterm": lambda: _hook_step(counter, signal.SIGTERM),
      "sigint": lambda: _hook_step(counter, signal.SIGINT),
      "plot": lambda: _hook_plot(counter),
      "commit": lambda: _hook_commit(counter),
      "after_save": lambda: _hook_after_save(counter),
      "eval": lambda: _hook_eval(counter),
      "restore": lambda: _hook_restore(counter),
  }
  hooks[point]()


if __name__ == "__main__":
  install(os.environ["KILL_AT"])
  sys.argv[0] = "hal_jax.main"
  app.run(main.main, flags_parser=cli_flags.parse_flags)
