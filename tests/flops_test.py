"""The analytic FLOP count: hand-counted primitives, and every method's train step against XLA:CPU's own count."""

import jax
import jax.numpy as jnp
import pytest

from hal_jax import flops
from tests import step_fixtures


def test_matmul_and_convolution_are_counted_by_hand():
  a, b = jnp.ones((3, 5, 7)), jnp.ones((3, 7, 11))
  assert flops.count(lambda x, y: jnp.einsum("bik,bkj->bij", x, y), a, b).model == 2 * 3 * 5 * 7 * 11
  x, kernel = jnp.ones((2, 16, 4)), jnp.ones((3, 4, 6))  # [B, T, C_in], [width, C_in, C_out]
  conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
  assert flops.count(conv, x, kernel).model == 2 * (2 * 16 * 6) * (3 * 4)


def test_elementwise_reductions_transcendentals_and_loops():
  x = jnp.ones((4, 8))
  counted = flops.count(lambda v: jnp.sum(jnp.exp(v) * 2.0 + v), x)
  assert (counted.model, counted.elementwise, counted.transcendentals) == (0, 32 + 32 + 32, 32)

  def scanned(v):
    return jax.lax.scan(lambda c, row: (c + row @ jnp.ones((8, 8)), None), jnp.zeros(8), v)[0]

  assert flops.count(scanned, x).model == 4 * 2 * 8 * 8  # the body, `length` times
  assert flops.count(scanned, x, scan_trip_counts=False).model == 2 * 8 * 8  # as XLA counts a while loop
  # A cond: its most expensive branch, or the branch named by cond_branch (index 0 is lax.cond's false branch).
  branched = lambda p, v: jax.lax.cond(p, lambda: v @ jnp.ones((8, 8)), lambda: v[:, :2] @ jnp.ones((2, 8)))
  assert flops.count(branched, True, x).model == 2 * 4 * 8 * 8
  assert flops.count(branched, True, x, cond_branch=0).model == 2 * 4 * 2 * 8
  assert flops.count(jax.grad(lambda v: jnp.sum(branched(True, v))), x, cond_branch=0).model == 2 * (2 * 4 * 2 * 8)
  # Reshapes, transposes, casts and broadcasts move data: no FLOPs.
  assert flops.count(lambda v: jnp.broadcast_to(v.T.reshape(2, 16).astype(jnp.bfloat16), (3, 2, 16)), x).total == 0


@pytest.mark.parametrize("config_module", ["configs.atba", "configs.hal", "configs.ahlm", "configs.haan"])
def test_train_step_count_agrees_with_xla_cpu(config_module):
  """Counted the way XLA counts (a scanned body once), the step's FLOPs are XLA:CPU's cost analysis of the same
  step's HLO within 2% (lowering only: XLA's count after fusion adds the elementwise work fusions duplicate, a few
  % at the papers' shapes)."""
  step, state, batch, _ = step_fixtures.tiny_step(config_module)
  counted = flops.count(step, state, batch, scan_trip_counts=False)
  cost = jax.jit(step).lower(state, batch).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  assert counted.total == pytest.approx(cost["flops"], rel=0.02)
  assert 0 < counted.model <= counted.total
  assert flops.count(step, state, batch).model >= counted.model  # scans counted in full
