"""Tests for hal_jax.models.hierarchical_vae: shapes, the change rule inside the scan, resets, masking, gradients."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax.models import changepoint
from hal_jax.models import hierarchical_vae

B, T, D, L, G = 2, 10, 5, 3, 6


def make_model(rule=changepoint.ChangeRule()):
  return hierarchical_vae.HierarchicalVAE(encoder_dim=8, gru_dim=G, latent_dim=L, head_dim=7, rule=rule)


@pytest.fixture(scope="module")
def setup():
  model = make_model()
  features = jax.random.normal(jax.random.key(0), (B, T, D))
  mask = jnp.ones((B, T), bool)
  params = jax.jit(model.init)(jax.random.key(1), features, mask)["params"]
  return model, params, features, mask


def apply(model, params, *args):
  """The model's jitted forward pass (jitting saves the eager dispatch of every op on the shared CPUs)."""
  return jax.jit(model.apply)({"params": params}, *args)


def test_shapes_and_the_paper_widths():
  model = hierarchical_vae.HierarchicalVAE()  # the paper's widths (spec §2.2)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4, 2048)), jnp.ones((1, 4), bool)))
  params = shapes["params"]
  assert params["h_encoder"]["dense0"]["kernel"].shape == (2048, 1024)
  assert params["h_decoder"]["dense1"]["kernel"].shape == (1024, 1024)
  assert params["transition"]["gru2"]["hn"]["kernel"].shape == (256, 256)
  # π₂'s first layer over [f; d; u] = 1024 + 256 + 1024 = 2304 inputs, split into its f/u part and its d part.
  assert params["prior2_context"]["kernel"].shape == (2048, 256)
  assert params["transition"]["prior2_state"]["kernel"].shape == (256, 256)
  assert params["transition"]["prior2_out"]["dense"]["kernel"].shape == (256, 128)
  assert params["transition"]["prior1_hidden"]["kernel"].shape == (320, 256)  # [d¹; v²]
  assert params["transition"]["posterior1_state"]["kernel"].shape == (320, 256)  # + f part (1024) = 1344
  assert params["observation_decoder"]["dense2"]["kernel"].shape == (1024, 2048)


def test_outputs_have_static_shapes_and_sane_values(setup):
  model, params, features, mask = setup
  out = apply(model, params, features, mask)
  assert out.reconstruction.shape == (B, T, D)
  assert out.v1.shape == out.v2.shape == (B, T, L)
  for name in ("kl1", "kl2", "change_points", "betas", "kl_static", "kl_change"):
    assert getattr(out, name).shape == (B, T), name
  assert not np.any(out.change_points[:, 0])  # nothing precedes the first snippet
  assert np.all(np.asarray(out.kl1) >= -1e-5) and np.all(np.asarray(out.kl2) >= -1e-5)
  # Level-2 KL is nonzero exactly at t = 0 and at change points.
  updates = np.asarray(out.change_points).copy()
  updates[:, 0] = True
  np.testing.assert_array_equal(np.asarray(out.kl2) > 0, updates)
  # The level-2 latent is copied between updates.
  v2 = np.asarray(out.v2)
  for b in range(B):
    for t in range(1, T):
      if not updates[b, t]:
        np.testing.assert_array_equal(v2[b, t], v2[b, t - 1])


def test_time_loop_is_one_scan_not_unrolled(setup):
  model, params, features, mask = setup
  jaxpr = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, features, mask))(params))
  assert jaxpr.count("scan[") == 1
  # The GRU's recurrent matmul appears once in the program, not once per snippet.
  longer = jnp.zeros((B, 4 * T, D))
  jaxpr_long = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, longer, jnp.ones((B, 4 * T), bool)))(params))
  assert jaxpr_long.count("dot_general") == jaxpr.count("dot_general")


def test_identical_priors_make_every_step_a_change(setup):
  # Zeroing π₂'s state weights makes p_st = p_ch, so D_st = D_ch > 0 and β <= 0.9 < 1 fires every step (spec §9).
  model, params, features, mask = setup
  params = flax.core.unfreeze(params)
  params["transition"]["prior2_state"]["kernel"] = jnp.zeros_like(params["transition"]["prior2_state"]["kernel"])
  out = apply(model, params, features, mask)
  np.testing.assert_array_equal(out.change_points[:, 1:], True)
  np.testing.assert_allclose(out.betas[:, 1:], 0.9, atol=1e-6)


def step_inputs(first):
  rng = np.random.default_rng(3)
  carry = tuple(jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((B, G), (B, G), (B, L), (B, L)))
  carry += (jnp.full((B,), 0.5),)
  contexts = tuple(jnp.asarray(rng.normal(size=(B, 7)), jnp.float32) for _ in range(3))
  noise = tuple(jnp.asarray(rng.normal(size=(B, L)), jnp.float32) for _ in range(2))
  inputs = (jnp.full((B,), first), jnp.ones((B,), bool), *contexts, *noise)
  return carry, inputs


@pytest.mark.parametrize("beta_fixed, expect_change", [(0.0, True), (1e9, False)])
def test_reset_after_a_change_and_carry_after_none(beta_fixed, expect_change):
  # β pinned at 0 declares a change whenever D_st > 0; β pinned huge never does.
  rule = changepoint.ChangeRule(alpha=0.0, beta_min=beta_fixed, beta_max=beta_fixed, beta_init=beta_fixed)
  step = hierarchical_vae.TransitionStep(gru_dim=G, latent_dim=L, head_dim=7, rule=rule)
  carry, inputs = step_inputs(first=False)
  carry = carry[:4] + (jnp.full((B,), beta_fixed),)
  variables = jax.jit(step.init)(jax.random.key(0), carry, inputs)
  (d1, d2, v1, v2, _), outputs = jax.jit(step.apply)(variables, carry, inputs)
  change, kl2 = outputs[4], outputs[3]
  np.testing.assert_array_equal(change, expect_change)
  if expect_change:
    np.testing.assert_array_equal(d1, 0.0)  # the level-1 GRU restarts from h_0
    assert np.all(np.asarray(kl2) > 0)
    assert not np.allclose(v2, carry[3])
  else:
    assert not np.allclose(d1, 0.0)
    np.testing.assert_array_equal(d2, carry[1])
    np.testing.assert_array_equal(v2, carry[3])
    np.testing.assert_array_equal(kl2, 0.0)


def test_padding_leaves_the_valid_prefix_unchanged(setup):
  model, params, features, mask = setup
  noise = tuple(jax.random.normal(k, (B, T, L)) for k in jax.random.split(jax.random.key(5), 2))
  short = apply(model, params, features, mask, noise)
  pad = 6
  padded_features = jnp.pad(features, ((0, 0), (0, pad), (0, 0)))
  padded_mask = jnp.pad(mask, ((0, 0), (0, pad)))
  padded_noise = tuple(jnp.pad(n, ((0, 0), (0, pad), (0, 0)), constant_values=7.0) for n in noise)
  long = apply(model, params, padded_features, padded_mask, padded_noise)
  for name in ("reconstruction", "kl1", "kl2", "change_points", "betas", "v1", "v2"):
    np.testing.assert_allclose(getattr(long, name)[:, :T], getattr(short, name), atol=1e-5, err_msg=name)
  for name in ("kl1", "kl2", "change_points", "reconstruction"):
    np.testing.assert_array_equal(getattr(long, name)[:, T:], 0, err_msg=name)


def test_gradients_are_finite_reach_every_block_and_skip_padding(setup):
  model, params, features, mask = setup
  mask = mask.at[1, 6:].set(False)
  features = features * mask[..., None]
  noise = tuple(jax.random.normal(k, (B, T, L)) for k in jax.random.split(jax.random.key(6), 2))

  def loss(p, x):
    out = model.apply({"params": p}, x, mask, noise)
    squared = jnp.sum(jnp.square(x - out.reconstruction), axis=-1)
    return jnp.sum(jnp.where(mask, 0.5 * squared, 0.0) + out.kl1 + out.kl2)

  grads, feature_grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, features)
  flat = flax.traverse_util.flatten_dict(grads)
  for path, grad in flat.items():
    assert np.all(np.isfinite(grad)), path
  for block in ("h_encoder", "h_decoder", "observation_decoder", "prior2_context", "posterior2_context",
                "posterior1_context"):
    assert any(np.any(g != 0) for p, g in flat.items() if p[0] == block), block
  for block in ("gru1", "gru2", "prior2_out", "posterior2_out", "prior1_out", "posterior1_out"):
    assert any(np.any(g != 0) for p, g in flat.items() if p[:2] == ("transition", block)), block
  np.testing.assert_array_equal(feature_grads[1, 6:], 0.0)
  assert np.any(feature_grads[1, :6] != 0)
