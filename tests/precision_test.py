"""The compute-dtype policy (hal_jax/precision.py): which arrays are bfloat16, float32 untouched, determinism."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax import errors
from hal_jax import flops
from hal_jax import precision
from hal_jax.methods import base
from tests import step_fixtures


def _step(config_module, dtype):
  return step_fixtures.tiny_step(config_module, dtype)[:3]


def _equations(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in flops._sub_jaxprs(eqn):
      yield from _equations(sub)


@pytest.mark.parametrize("config_module", ["configs.atba", "configs.hal", "configs.ahlm", "configs.haan"])
def test_bfloat16_runs_the_matmuls_in_bfloat16_and_keeps_state_and_softmax_in_float32(config_module):
  step, state, batch = _step(config_module, "bfloat16")
  closed = jax.make_jaxpr(step)(state, batch)
  new_state = jax.eval_shape(step, state, batch)[0]
  # Parameters and optimizer state stay float32 (the gradients come back through the cast as float32).
  for leaf in jax.tree.leaves((new_state.params, new_state.opt_state)):
    assert leaf.dtype != jnp.bfloat16
  # Nearly all matmul FLOPs (each scanned body once, as `_equations` visits it) have bfloat16 operands.
  bf16_flops = sum(flops.equation_count(e).model for e in _equations(closed.jaxpr)
                   if e.invars and getattr(e.invars[0].aval, "dtype", None) == jnp.bfloat16)
  all_flops = flops.count_jaxpr(closed, scan_trip_counts=False).model
  assert bf16_flops > 0.9 * all_flops, (bf16_flops, all_flops)
  # Softmaxes, log-sum-exps and logs are evaluated in float32. (HAL's σ = exp(½ log σ²) and AHLM's σ = softplus(·)
  # are activations in the compute dtype; the KLs that read them are float32.)
  checked = ("log", "reduce_max") + (("exp", "log1p") if config_module in ("configs.atba", "configs.haan") else ())
  for eqn in _equations(closed.jaxpr):
    if eqn.primitive.name in checked:
      assert eqn.invars[0].aval.dtype == jnp.float32, eqn


def test_float32_adds_no_operation():
  tree = {"w": jnp.ones(3), "i": jnp.arange(2)}
  assert precision.cast(tree, jnp.float32) is tree
  step, state, batch = _step("configs.atba", "float32")
  text = str(jax.make_jaxpr(step)(state, batch))
  assert "bf16" not in text


def test_an_unknown_compute_dtype_is_a_config_error():
  config = __import__("configs.atba", fromlist=["get_config"]).get_config("test")
  with config.unlocked():
    config.compute_dtype = "float16"
  with pytest.raises(errors.ConfigError, match="compute_dtype"):
    base.make_method(config, ("background", "a1"))


def test_bfloat16_training_is_deterministic():
  """The same seed twice gives bitwise-equal parameters after a few bfloat16 steps (HAAN's small step)."""
  step, _, batch, init = step_fixtures.tiny_step("configs.haan", "bfloat16")
  compiled = jax.jit(step)

  def run():
    state = init()
    for _ in range(3):
      state, _ = compiled(state, batch)
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(state.params):
      digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()

  assert run() == run()
