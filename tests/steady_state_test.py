"""A long run is flat: after the first epoch of each stage nothing compiles again, and memory stops growing.

Twelve epochs of the tiny ATBA preset, with features of D = 4096 (so that every batch is 4 MiB and a leak of batches
is visible), evaluating and saving a checkpoint every epoch. `train.train_and_evaluate` runs unchanged; the
test only watches it: JAX's compile events (`jax.monitoring`, which names the compiled function), and at each
epoch's evaluation line (`MetricWriter.write_scalars`) the host RSS and the number of live device arrays.
"""

import collections
import gc
import ctypes
import os
import shutil

import jax
import numpy as np
import pytest

from configs import atba as atba_config
from hal_jax import metric_writer
from hal_jax import train
from hal_jax.data import synthetic

pytestmark = pytest.mark.slow

FEATURE_DIM = 4096
NUM_EPOCHS = 12
# glibc's mallopt parameter for the mmap threshold.
_M_MMAP_THRESHOLD = -3
# JAX's event for each XLA compilation (a persistent-cache hit included), with the function as `fun_name`.
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _rss_bytes() -> int:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def data_dir(tmp_path):
  """The synthetic "test" preset (12 train / 4 test videos of 43-104 frames, no latents), its 16 feature dimensions
  tiled to FEATURE_DIM (generating D = 4096 directly takes minutes; the numbers do not matter here)."""
  directory = str(tmp_path / "data")
  synthetic.generate(directory, synthetic.PRESETS["test"])
  shutil.rmtree(os.path.join(directory, "latents"))
  features = os.path.join(directory, "features")
  for name in os.listdir(features):
    path = os.path.join(features, name)
    small = np.load(path)  # [16, T] (MS-TCN layout).
    np.save(path, np.tile(small, (FEATURE_DIM // small.shape[0], 1)))
  return directory


def test_compiles_and_memory_stay_flat_over_many_epochs(data_dir, tmp_path, monkeypatch):
  """No compilation after epoch 1 (the first epoch of stage 2); RSS and live arrays flat from epoch 3 to the end.

  The RSS bound is half of the bytes of the training batches fed between the two measurements (8 epochs x 3 batches
  x 4 MiB of features = 96 MiB, so 48 MiB): a loop that kept its batches, on the host or on the devices, grows by
  about twice the bound (measured: +100 MiB), while this one stays within a few MiB. For that the mmap threshold
  of glibc's malloc is fixed at 128 KiB first: by default glibc raises it after a big block is freed, so freed
  4 MiB batches are recycled inside the heap, whose RSS creeps up by tens of MiB for a while (allocator
  fragmentation, not a leak: it levels off). With a fixed threshold every block of 128 KiB or more is its own
  mapping, returned to the system when freed, so RSS follows the memory in use.
  """
  assert ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 128 * 1024) == 1

  compiles = collections.Counter()

  def on_event(event: str, duration: float, **kwargs) -> None:  # pylint: disable=unused-argument
    if event == _COMPILE_EVENT:
      compiles[kwargs.get("fun_name", "?")] += 1

  # (epoch, compiles so far, RSS, live device arrays) at each epoch's evaluation line.
  samples = []
  write_scalars = metric_writer.MetricWriter.write_scalars

  def watched_write_scalars(self, step, scalars):
    if "eval/mof" in scalars:
      # Arrays that only a reference cycle still holds are garbage the collector frees at a moment that depends on
      # allocation counts (and so on thread timing); collecting first counts what the loop keeps.
      gc.collect()
      samples.append((scalars["epoch"], dict(compiles), _rss_bytes(), len(jax.live_arrays())))
    return write_scalars(self, step, scalars)

  monkeypatch.setattr(metric_writer.MetricWriter, "write_scalars", watched_write_scalars)
  config = atba_config.get_config("test")
  with config.unlocked():
    config.update(dict(data_dir=data_dir, feature_dim=FEATURE_DIM, num_epochs=NUM_EPOCHS, stage_epoch=1,
                       warmup_epochs=1, eval_every_epochs=1, checkpoint_every_steps=3, log_every_steps=3,
                       progress=False, tensorboard=False))
  jax.monitoring.register_event_duration_secs_listener(on_event)
  try:
    result = train.train_and_evaluate(config, str(tmp_path / "run"))
  finally:
    jax.monitoring.unregister_event_duration_listener(on_event)

  steps_per_epoch = 3  # 12 videos, batch 4.
  assert result.steps == NUM_EPOCHS * steps_per_epoch
  assert [epoch for epoch, *_ in samples] == list(range(NUM_EPOCHS))
  by_epoch = {epoch: (seen, rss, live) for epoch, seen, rss, live in samples}

  # Compiles: one train step per stage (one bucket length here), all of them in epochs 0 and 1; after that,
  # nothing compiles, neither the step nor evaluation, checkpointing or metric code.
  assert by_epoch[1][0].get("jit(train_step)") == 2, by_epoch[1][0]
  assert by_epoch[NUM_EPOCHS - 1][0] == by_epoch[1][0], (by_epoch[1][0], by_epoch[NUM_EPOCHS - 1][0])

  # Device memory: exactly as many live arrays at the end of every epoch from 3 on (fewer in the last one, where the
  # input stream has ended and holds no prefetched batches).
  live = [by_epoch[epoch][2] for epoch in range(3, NUM_EPOCHS)]
  assert len(set(live[:-1])) == 1 and live[-1] <= live[0], live

  # Host memory (see the docstring for the bound).
  batch_bytes = config.batch_size * 64 * FEATURE_DIM * np.dtype(np.float32).itemsize  # One bucket: 64 frames.
  bound = (NUM_EPOCHS - 1 - 3) * steps_per_epoch * batch_bytes // 2
  rss = [by_epoch[epoch][1] for epoch in range(3, NUM_EPOCHS)]
  growth = max(rss) - rss[0]
  assert growth < bound, f"RSS grew by {growth / 2**20:.1f} MiB from epoch 3 (bound {bound / 2**20:.0f} MiB): " + \
      ", ".join(f"{r / 2**20:.0f}" for r in rss)
