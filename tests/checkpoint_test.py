"""Tests for hal_jax.checkpoint: round trip, shape and method checks, fallback past a corrupted step."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax import checkpoint
from hal_jax import errors


def _state(scale=1.0):
  return {"params": {"w": jnp.arange(6.0).reshape(2, 3) * scale, "b": jnp.ones(3) * scale},
          "step": jnp.asarray(7, jnp.int32)}


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def test_round_trip_restores_state_and_meta(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), keep=2)
  ckpt.save(4, _state(1.0), {"method": "atba", "epoch": 1, "batch_in_epoch": 0})
  ckpt.save(8, _state(2.0), {"method": "atba", "epoch": 2, "batch_in_epoch": 0})
  restored = ckpt.restore_latest(_abstract(_state()), expect={"method": "atba"})
  ckpt.close()
  assert restored.step == 8
  assert restored.meta["epoch"] == 2 and restored.meta["batch_in_epoch"] == 0
  np.testing.assert_array_equal(restored.state["params"]["w"], np.arange(6.0).reshape(2, 3) * 2.0)


def test_latest_meta_reads_the_newest_metadata_only(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), keep=2)
  assert ckpt.latest_meta() is None
  ckpt.save(4, _state(1.0), {"method": "atba", "selection_score": 1.5})
  ckpt.save(8, _state(2.0), {"method": "atba", "selection_score": 2.5})
  step, meta = ckpt.latest_meta()
  ckpt.close()
  assert step == 8 and meta["selection_score"] == 2.5


def test_keeps_only_the_latest_n(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, _state(step), {"method": "atba"})
  assert ckpt.all_steps() == [2, 3]
  ckpt.close()


def test_empty_directory_restores_nothing(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  assert ckpt.restore_latest(_abstract(_state()), expect={}) is None
  ckpt.close()


def test_other_method_is_refused(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(1, _state(), {"method": "hal"})
  with pytest.raises(errors.CheckpointError, match="method='hal'"):
    ckpt.restore_latest(_abstract(_state()), expect={"method": "atba"})
  ckpt.close()


def test_other_shapes_are_refused(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(1, _state(), {"method": "atba"})
  other = {"params": {"w": jnp.zeros((3, 3)), "b": jnp.ones(3)}, "step": jnp.asarray(0, jnp.int32)}
  with pytest.raises(errors.CheckpointError, match="different parameter shapes"):
    ckpt.restore_latest(_abstract(other), expect={"method": "atba"})
  ckpt.close()


def test_corrupted_latest_falls_back_to_previous(tmp_path):
  directory = tmp_path / "ckpt"
  ckpt = checkpoint.Checkpointer(str(directory), keep=3)
  ckpt.save(1, _state(1.0), {"method": "atba"})
  ckpt.save(2, _state(2.0), {"method": "atba"})
  ckpt.close()
  # Truncate every file of the newest step's state item.
  for root, _, files in os.walk(directory / "2" / "state"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
  messages = []
  ckpt = checkpoint.Checkpointer(str(directory), keep=3)
  restored = ckpt.restore_latest(_abstract(_state()), expect={"method": "atba"}, on_fallback=messages.append)
  ckpt.close()
  assert restored.step == 1
  np.testing.assert_array_equal(restored.state["params"]["b"], np.ones(3))
  assert len(messages) == 1 and "unreadable checkpoint" in messages[0] and "/2" in messages[0]
