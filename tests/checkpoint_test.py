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


# ----------------------------------------------------------------------------------------------------------------------
# Never silently start over: corrupt steps fall back, another run's steps stop, a bug propagates.


def _corrupt(directory, step, item="state"):
  """Overwrites every file of one item of `step` with garbage (a disk error, a truncated copy)."""
  for root, _, names in os.walk(directory / str(step) / item):
    for name in names:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")


def _snapshot(directory):
  """relative path -> file bytes of everything under `directory`."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files


def _saved(directory, steps=(1, 2)):
  ckpt = checkpoint.Checkpointer(str(directory), keep=5)
  for step in steps:
    ckpt.save(step, _state(float(step)), {"method": "atba"})
  ckpt.close()


def test_no_restorable_checkpoint_stops_naming_each_step_and_touches_nothing(tmp_path):
  directory = tmp_path / "ckpt"
  _saved(directory)
  _corrupt(directory, 2)  # Garbage state files.
  _corrupt(directory, 1, item="meta")  # Garbage metadata.
  before = _snapshot(tmp_path)
  ckpt = checkpoint.Checkpointer(str(directory), keep=5)
  with pytest.raises(errors.CheckpointError) as info:
    ckpt.restore_latest(_abstract(_state()), expect={"method": "atba"})
  ckpt.close()
  assert info.value.where == str(directory)
  line = errors.format_error(info.value)
  assert "\n" not in line
  assert "none of the 2 checkpoints restores (step 2: " in line and "; step 1: JSONDecodeError" in line, line
  assert "nothing was changed" in line and "--start_over" in line
  assert _snapshot(tmp_path) == before


def test_latest_meta_stops_when_no_metadata_reads(tmp_path):
  directory = tmp_path / "ckpt"
  _saved(directory, steps=(3,))
  _corrupt(directory, 3, item="meta")
  ckpt = checkpoint.Checkpointer(str(directory))
  with pytest.raises(errors.CheckpointError, match=r"none of the 1 checkpoints restores \(step 3: JSONDecodeError"):
    ckpt.latest_meta()
  ckpt.close()


def test_start_over_sets_the_unreadable_steps_aside_at_the_first_save(tmp_path):
  directory = tmp_path / "ckpt"
  _saved(directory)
  _corrupt(directory, 1)
  _corrupt(directory, 2)
  ckpt = checkpoint.Checkpointer(str(directory), keep=5)
  assert ckpt.restore_latest(_abstract(_state()), expect={"method": "atba"}, start_over=True) is None
  assert ckpt.all_steps() == [1, 2]  # Untouched until the run writes.
  ckpt.save(1, _state(5.0), {"method": "atba"})
  assert ckpt.all_steps() == [1]
  restored = ckpt.restore_latest(_abstract(_state()), expect={"method": "atba"})
  ckpt.close()
  np.testing.assert_array_equal(restored.state["params"]["b"], np.full(3, 5.0))
  assert sorted(os.listdir(str(directory) + checkpoint.UNREADABLE_SUFFIX)) == ["1", "2"]


def test_a_resumed_run_saves_over_the_step_it_fell_back_past(tmp_path):
  # Resumed from step 1 past a corrupt step 2, the run reaches step 2 again: its save replaces the corrupt one
  # (set aside, not deleted) instead of failing with Orbax's StepAlreadyExistsError.
  directory = tmp_path / "ckpt"
  _saved(directory)
  _corrupt(directory, 2)
  ckpt = checkpoint.Checkpointer(str(directory), keep=5)
  assert ckpt.restore_latest(_abstract(_state()), expect={"method": "atba"}).step == 1
  ckpt.save(2, _state(7.0), {"method": "atba"})
  restored = ckpt.restore_latest(_abstract(_state()), expect={"method": "atba"})
  ckpt.close()
  assert restored.step == 2
  np.testing.assert_array_equal(restored.state["params"]["b"], np.full(3, 7.0))
  assert os.listdir(str(directory) + checkpoint.UNREADABLE_SUFFIX) == ["2"]


@pytest.mark.parametrize("meta, reason", [
    ("[1, 2]", "metadata is a list, not an object"),
    ('{"method": "atba"}', "metadata lacks step, shapes"),
    ('{"method": "atba", "step": 9, "shapes": "x"}', "metadata says step 9"),
    ("[" * 5000 + "]" * 5000, "metadata nested too deeply"),
    ('{"method": "atb', "JSONDecodeError"),
    ("\udcff", "UnicodeDecodeError"),
])
def test_metadata_that_is_not_a_checkpoints_counts_as_corrupt(tmp_path, meta, reason):
  directory = tmp_path / "ckpt"
  _saved(directory)
  with open(directory / "2" / "meta" / "metadata", "w", encoding="utf-8", errors="surrogateescape") as f:
    f.write(meta)
  messages = []
  ckpt = checkpoint.Checkpointer(str(directory), keep=5)
  restored = ckpt.restore_latest(_abstract(_state()), expect={"method": "atba"}, on_fallback=messages.append)
  ckpt.close()
  assert restored.step == 1
  assert len(messages) == 1 and reason in messages[0], messages


def test_a_bug_while_restoring_propagates_instead_of_falling_back(tmp_path, monkeypatch):
  directory = tmp_path / "ckpt"
  _saved(directory)
  ckpt = checkpoint.Checkpointer(str(directory), keep=5)
  real_restore = ckpt._manager.restore  # pylint: disable=protected-access

  def buggy(step, args):
    if "state" in args.keys():
      raise TypeError("a bug in the restore code")
    return real_restore(step, args=args)

  monkeypatch.setattr(ckpt._manager, "restore", buggy)  # pylint: disable=protected-access
  with pytest.raises(TypeError, match="a bug"):
    ckpt.restore_latest(_abstract(_state()), expect={"method": "atba"})
  ckpt.close()
  assert not os.path.exists(str(directory) + checkpoint.UNREADABLE_SUFFIX)
