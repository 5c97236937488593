"""Tests of hal_jax.methods.hal: L_s, the tap losses and the method (taps, losses per stage, ablations, inference)
against NumPy transcriptions of spec hal_atba.md §7.3 and §8.1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hal as hal_config
from hal_jax import errors
from hal_jax.methods import atba
from hal_jax.methods import base
from hal_jax.methods import hal
from hal_jax.models import latent
from hal_jax.models import pyramid_transformer as pt
from tests.methods.atba_test import LABELS
from tests.methods.atba_test import TRANSCRIPTS
from tests.methods.atba_test import device_batch
from tests.methods.atba_test import make_batch

C = len(LABELS)


# ---------------------------------------------------------------------------------------------------------------------
# NumPy references (float64), written from spec §7.3.


def numpy_soft_max_change(latents, frame_mask):
  """Per video: S = Σ_t softmax(Δ)_t Δ_t over the T_v − 1 steps of the L2-normalised latents; has_step = T_v ≥ 2."""
  s = np.zeros(latents.shape[0])
  has_step = np.zeros(latents.shape[0], bool)
  for b in range(latents.shape[0]):
    n = int(frame_mask[b].sum())
    if n < 2:
      continue
    x = latents[b, :n].astype(np.float64)
    unit = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    change = np.linalg.norm(unit[1:] - unit[:-1], axis=-1)
    weights = np.exp(change) / np.sum(np.exp(change))
    s[b], has_step[b] = np.sum(weights * change), True
  return s, has_step


def numpy_smooth(visual, action, frame_mask, batch_mask, delta, hinge=True):
  s_v, has_step = numpy_soft_max_change(visual, frame_mask)
  s_c, _ = numpy_soft_max_change(action, frame_mask)
  per_video = delta * s_c + (np.maximum(0.0, s_c - s_v) if hinge else 0.0)
  counted = has_step & batch_mask
  return per_video[counted].sum(), counted.sum()


def numpy_tap_losses(taps, frame_weight):
  count = max(frame_weight.sum(), 1.0)
  rec = kl = 0.0
  for t in taps:
    mean, log_var = np.asarray(t.mean, np.float64), np.asarray(t.log_var, np.float64)
    err = np.mean((np.asarray(t.reconstruction, np.float64) - np.asarray(t.target, np.float64))**2, axis=-1)
    rec += np.sum(err * frame_weight) / count
    kl += np.sum(0.5 * np.sum(mean**2 + np.exp(log_var) - log_var - 1.0, axis=-1) * frame_weight) / count
  return rec, kl


# ---------------------------------------------------------------------------------------------------------------------
# L_s and the tap losses.


def _latents(seed=0):
  """[4, 6, 3] latents with frames (6, 4, 1, 0): junk on padding, a zero vector and a repeated frame in video 0."""
  rng = np.random.default_rng(seed)
  frame_mask = np.arange(6)[None] < np.array([6, 4, 1, 0])[:, None]
  x = rng.normal(size=(4, 6, 3))
  x = np.where(frame_mask[..., None], x, 1e3 * rng.normal(size=x.shape))
  x[0, 2] = 0.0
  x[0, 4] = x[0, 3]
  return x.astype(np.float32), frame_mask


def test_soft_max_change_matches_numpy_and_ignores_padding():
  latents, frame_mask = _latents()
  s, has_step = hal.soft_max_change(jnp.asarray(latents), jnp.asarray(frame_mask))
  expected, expected_has_step = numpy_soft_max_change(latents, frame_mask)
  np.testing.assert_array_equal(np.asarray(has_step), [True, True, False, False])
  np.testing.assert_array_equal(np.asarray(has_step), expected_has_step)
  np.testing.assert_allclose(np.asarray(s), expected, rtol=1e-5, atol=1e-6)
  # A soft maximum: between the mean and the max of the steps (the softmax is not uniform, nor a hard max).
  unit = latents[1, :4] / np.linalg.norm(latents[1, :4], axis=-1, keepdims=True)
  steps = np.linalg.norm(np.diff(unit, axis=0), axis=-1)
  assert steps.mean() + 1e-3 < float(s[1]) < steps.max() - 1e-3
  other = latents.copy()
  other[~frame_mask] = -latents[~frame_mask]
  np.testing.assert_array_equal(np.asarray(hal.soft_max_change(jnp.asarray(other), jnp.asarray(frame_mask))[0]),
                                np.asarray(s))


def test_soft_max_change_is_scale_invariant_and_uses_euclidean_steps():
  # Two 2-d unit steps of a quarter turn: each Δ = ‖(0,1) − (1,0)‖ = √2, so S = √2; scaling frames changes nothing.
  latents = jnp.array([[[3.0, 0.0], [0.0, 0.5], [-2.0, 0.0]]])
  s, _ = hal.soft_max_change(latents, jnp.ones((1, 3), bool))
  np.testing.assert_allclose(np.asarray(s), [np.sqrt(2.0)], rtol=1e-6)


@pytest.mark.parametrize("delta,hinge", [(0.1, True), (0.0, True), (0.1, False), (0.5, True)])
def test_smooth_transition_loss_matches_numpy(delta, hinge):
  rng = np.random.default_rng(1)
  frame_mask = np.arange(8)[None] < np.array([8, 8, 5, 1, 7])[:, None]
  batch_mask = np.array([True, True, True, True, False])
  visual = rng.normal(size=(5, 8, 4)).astype(np.float32)
  # Video 0: a slow action latent (S_c < S_v, hinge inactive); video 1: as fast as noise (hinge active at times).
  action = rng.normal(size=(5, 8, 4)).astype(np.float32)
  action[0] = 1.0 + 0.05 * rng.normal(size=(8, 4))
  s_v, _ = numpy_soft_max_change(visual, frame_mask)
  s_c, _ = numpy_soft_max_change(action, frame_mask)
  assert s_c[0] < s_v[0] and (s_c[1:3] > s_v[1:3]).any(), "both sides of the hinge should be exercised"
  total, count = hal.smooth_transition_loss(jnp.asarray(visual), jnp.asarray(action), jnp.asarray(frame_mask),
                                            jnp.asarray(batch_mask), delta=delta, hinge=hinge)
  expected_total, expected_count = numpy_smooth(visual, action, frame_mask, batch_mask, delta, hinge)
  assert float(count) == expected_count == 3  # A one-frame video and a padding video are excluded.
  np.testing.assert_allclose(float(total), expected_total, rtol=1e-5, atol=1e-6)


def test_safe_norm_and_unit_values_and_finite_gradients_at_zero():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(np.asarray(hal._safe_norm(x)), [5.0, 0.0])
  np.testing.assert_allclose(np.asarray(hal._unit(x)), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
  grad_norm = np.asarray(jax.grad(lambda v: jnp.sum(hal._safe_norm(v)))(x))
  np.testing.assert_allclose(grad_norm, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
  grad_unit = np.asarray(jax.grad(lambda v: jnp.sum(hal._unit(v) * jnp.array([1.0, 2.0])))(x))
  assert np.all(np.isfinite(grad_unit))
  # d(x/‖x‖)·w at (3, 4) with w = (1, 2): (w − (u·w) u) / ‖x‖ = ((1, 2) − 2.2 (0.6, 0.8)) / 5.
  np.testing.assert_allclose(grad_unit[0], (np.array([1.0, 2.0]) - 2.2 * np.array([0.6, 0.8])) / 5.0, rtol=1e-5)


def test_smooth_transition_loss_gradient_finite_with_zero_latents_and_still_frames():
  latents, frame_mask = _latents()
  still = latents.copy()
  still[1] = still[1, :1]  # Every step of video 1 is zero: Δ = 0 everywhere.
  batch_mask = jnp.array([True, True, True, False])
  loss = lambda v, c: hal.smooth_transition_loss(v, c, jnp.asarray(frame_mask), batch_mask, delta=0.1)[0]
  grads = jax.grad(loss, argnums=(0, 1))(jnp.asarray(latents), jnp.asarray(still))
  for g in grads:
    g = np.asarray(g)
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[~frame_mask], 0.0)  # Padding gets no gradient.
  assert np.abs(np.asarray(grads[1])[0]).max() > 0


def test_tap_losses_match_numpy():
  rng = np.random.default_rng(2)
  shape = (3, 5, 4)
  taps = tuple(latent.TapOutput(*(jnp.asarray(rng.normal(size=shape).astype(np.float32)) for _ in range(5)))
               for _ in range(2))
  frame_weight = (np.arange(5)[None] < np.array([5, 2, 0])[:, None]).astype(np.float32)
  terms = hal.tap_losses(taps, jnp.asarray(frame_weight))
  assert set(terms) == {"reconstruction", "kl"}
  rec, kl = numpy_tap_losses(taps, frame_weight)
  np.testing.assert_allclose(float(terms["reconstruction"][0]), rec, rtol=1e-5)
  np.testing.assert_allclose(float(terms["kl"][0]), kl, rtol=1e-5)
  assert float(terms["reconstruction"][1]) == float(terms["kl"][1]) == 1.0
  # Padded frames (weight 0) may hold anything.
  junk = tuple(t._replace(reconstruction=jnp.where(jnp.asarray(frame_weight)[..., None] > 0, t.reconstruction, 1e6))
               for t in taps)
  np.testing.assert_allclose(float(hal.tap_losses(junk, jnp.asarray(frame_weight))["reconstruction"][0]), rec,
                             rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# The method. Training-mode checks (dropout on) go through one jitted value-and-grad; checks that compare with NumPy
# run eagerly with dropout 0 (the eager calls share one op cache, so only the first pays for compilation).


def _config(arg="test", **overrides):
  config = hal_config.get_config(arg)
  with config.unlocked():
    config.update(overrides)
  return config


def _encoder(config):
  """The bare encoder, built here from the config (not through the method)."""
  return pt.PyramidTransformer(num_classes=C, max_positions=config.max_positions, hidden_dim=config.hidden_dim,
                               num_layers=config.num_layers, num_heads=config.num_heads)


def _with_log_var_bias(params, biases):
  """`params` with the taps' U biases set to constants, {tap name: bias}."""
  d = params["tap_visual"]["log_var"]["bias"].shape[0]
  for tap, bias in biases.items():
    params = {**params, tap: {**params[tap], "log_var": {**params[tap]["log_var"], "bias": jnp.full((d,), bias)}}}
  return params


@pytest.fixture(scope="module")
def setup():
  """Method ("test" preset, full HAL), batch, params and the stage-1 value-and-grad (compiled once)."""
  method = hal.make_method(_config(), LABELS)
  batch = device_batch(make_batch(method.config.feature_dim))
  params = jax.jit(method.init)(jax.random.key(0), batch)
  value_and_grad = jax.jit(jax.value_and_grad(lambda p, b, r: method.loss(p, b, r, 1), has_aux=True))
  return method, batch, params, value_and_grad


@pytest.fixture(scope="module")
def eager(setup):
  """The full-HAL method with dropout 0, and the bare encoder's eval outputs with every layer's tokens."""
  _, batch, params, _ = setup
  method = hal.make_method(_config(dropout=0.0), LABELS)
  ref = _encoder(method.config).apply({"params": params["encoder"]}, batch["features"], batch["frame_mask"],
                                      return_layer_states=True)
  return method, batch, params, ref


def test_make_method_checks_z_layer():
  config = _config()
  assert config.num_layers == 3 and config.z_layer == 1
  assert hal.make_method(_config(z_layer=0), LABELS).config.z_layer == 0
  for bad in (2, 3, -1):
    with pytest.raises(errors.ConfigError) as info:
      hal.make_method(_config(z_layer=bad), LABELS)
    assert info.value.where == "config.z_layer"
  method = base.make_method(config, LABELS)
  assert isinstance(method, hal.Hal) and method.name == "hal" and method.background_id == 0


def test_params_have_encoder_and_two_taps(setup):
  method, batch, params, _ = setup
  d = method.config.hidden_dim
  assert set(params) == {"encoder", "tap_visual", "tap_action"}
  for tap in ("tap_visual", "tap_action"):
    assert set(params[tap]) == {"variance_layer", "log_var", "decoder"}
    np.testing.assert_array_equal(np.asarray(params[tap]["log_var"]["kernel"]), np.zeros((d, d)))
    assert params[tap]["decoder"]["output"]["kernel"].shape == (d, d)
  # The encoder subtree is exactly ATBA's parameter tree.
  atba_params = jax.eval_shape(atba.make_method(method.config, LABELS).init, jax.random.key(0), batch)
  assert jax.tree.map(lambda x: x.shape, atba_params) == jax.tree.map(lambda x: x.shape, params["encoder"])


def test_taps_sit_on_layers_z_and_z_plus_one(eager):
  method, batch, params, ref = eager
  z = method.config.z_layer
  _, taps = method.network.apply({"params": params}, batch["features"], batch["frame_mask"], deterministic=True,
                                 latent_rng=jax.random.key(5))
  visual, action = taps
  close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  close(visual.mean, ref.layer_outputs[z][:, C:])
  close(visual.target, ref.layer_inputs[z][:, C:])
  close(action.mean, ref.layer_outputs[z + 1][:, C:])
  # ξ reconstructs v̂: the action tap's target is the visual tap's mean.
  np.testing.assert_array_equal(np.asarray(action.target), np.asarray(visual.mean))
  for tap in taps:
    np.testing.assert_array_equal(np.asarray(tap.log_var), 0.0)
  # The two taps draw different noise.
  assert not np.allclose(np.asarray(visual.sample - visual.mean), np.asarray(action.sample - action.mean))


def test_predictions_equal_the_encoder_alone(eager):
  method, batch, params, ref = eager
  z = method.config.z_layer
  # The training-dropout config: predict is eval mode whatever the dropout rate.
  predict = hal.make_method(_config(), LABELS).predict
  out = predict(params, batch)
  expected = {"frame_logits": ref.frame_logits, "video_logits": ref.video_logits,
              "visual_latent": ref.layer_outputs[z][:, C:], "action_latent": ref.layer_outputs[z + 1][:, C:]}
  assert set(out) == set(expected)
  for key, value in expected.items():
    np.testing.assert_allclose(np.asarray(out[key]), np.asarray(value), rtol=1e-5, atol=1e-5, err_msg=key)
  # The branch's parameters play no part in inference, and predict is deterministic.
  scrambled = jax.tree.map(lambda x: x + 1.0, {k: v for k, v in params.items() if k != "encoder"})
  again = predict({**params, **scrambled}, batch)
  for key in out:
    np.testing.assert_array_equal(np.asarray(again[key]), np.asarray(out[key]))


def test_stage0_loss_is_video_bce_plus_reconstruction_and_kl(eager):
  method, batch, params, ref = eager
  loss, aux = method.loss(params, batch, jax.random.key(1), 0)
  assert set(aux) == {"video_bce", "reconstruction", "kl"}
  vid = float(aux["video_bce"][0]) / float(aux["video_bce"][1])
  rec, kl = float(aux["reconstruction"][0]), float(aux["kl"][0])
  assert rec > 0
  np.testing.assert_allclose(float(loss), vid + 0.1 * rec + 1e-3 * kl, rtol=1e-6)
  # log σ² = 0 at init, so each frame's KL is ½‖μ‖², μ the tap layer's output; mean over the real valid frames.
  weight = np.asarray(batch["frame_mask"] & batch["batch_mask"][:, None], np.float64)
  expected_kl = sum(np.sum(0.5 * np.sum(np.asarray(ref.layer_outputs[layer][:, C:], np.float64)**2, -1) * weight)
                    for layer in (1, 2)) / weight.sum()
  np.testing.assert_allclose(kl, expected_kl, rtol=1e-5)
  # Fresh noise every step: another key gives another reconstruction (dropout is 0 here, so only z differs).
  _, aux2 = method.loss(params, batch, jax.random.key(2), 0)
  assert abs(float(aux2["reconstruction"][0]) - rec) > 1e-6
  np.testing.assert_allclose(float(aux2["kl"][0]), kl, rtol=1e-6)


def test_stage1_adds_the_smooth_transition_loss(setup):
  _, batch, params, value_and_grad = setup
  (loss, aux), _ = value_and_grad(params, batch, jax.random.key(1))
  assert set(aux) == {"video_bce", "frame_ce", "contrast", "pseudo_label_accuracy", "reconstruction", "kl", "smooth"}
  assert float(aux["smooth"][1]) == 3.0  # The three real videos; the padding video has no step.
  assert float(aux["smooth"][0]) > 0
  mean = lambda key: float(aux[key][0]) / float(aux[key][1])
  expected = (mean("video_bce") + mean("frame_ce") + 0.1 * mean("contrast") + 0.1 * float(aux["reconstruction"][0])
              + 1e-3 * float(aux["kl"][0]) + 1e-3 * mean("smooth"))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_stage1_gradients(setup):
  method, batch, params, value_and_grad = setup
  _, grads = value_and_grad(params, batch, jax.random.key(1))
  for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
    name, leaf = jax.tree_util.keystr(path), np.asarray(leaf)
    assert np.all(np.isfinite(leaf)), name
    if "variance_layer" in name:
      # log σ² = U(Var(H)) with U = 0 at init: no gradient reaches Var until U moves.
      np.testing.assert_array_equal(leaf, 0.0, err_msg=name)
    else:
      assert np.abs(leaf).max() > 0, name
  d = method.config.hidden_dim
  moved = {**params}
  for i, tap in enumerate(("tap_visual", "tap_action")):
    kernel = 0.01 * jax.random.normal(jax.random.key(10 + i), (d, d))
    moved[tap] = {**params[tap], "log_var": {**params[tap]["log_var"], "kernel": kernel}}
  (loss, _), grads = value_and_grad(moved, batch, jax.random.key(1))
  assert np.isfinite(float(loss))
  for tap in ("tap_visual", "tap_action"):
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads[tap]["variance_layer"])[0]:
      leaf = np.asarray(leaf)
      assert np.all(np.isfinite(leaf)) and np.abs(leaf).max() > 0, tap + jax.tree_util.keystr(path)


def _masking_batches(feature_dim, lengths=(16, 11, 7, 9), transcripts=TRANSCRIPTS[:3] + ((0, 1),)):
  """The default batch with other padded frames, and a batch whose 4th video (valid frames, transcript) has
  batch_mask False: as is, with other features, and as a real video (the control)."""
  base_batch = make_batch(feature_dim)
  changed = make_batch(feature_dim)
  mask = changed["frame_mask"]
  changed["features"][~mask] = np.random.default_rng(4).normal(scale=100.0, size=changed["features"][~mask].shape)
  masked = [make_batch(feature_dim, lengths=lengths, transcripts=transcripts, batch_mask=m)
            for m in ([True, True, True, False],) * 2 + ([True] * 4,)]
  masked[1]["features"][3] = np.random.default_rng(5).normal(size=masked[1]["features"][3].shape)
  return [device_batch(b) for b in [base_batch, changed] + masked]


@pytest.mark.parametrize("stage", [0, 1])
def test_loss_ignores_padded_frames_and_padding_videos(setup, eager, stage):
  if stage == 0:
    method, _, params, _ = eager
    loss_fn = lambda b: method.loss(params, b, jax.random.key(3), 0)
  else:
    method, _, params, value_and_grad = setup
    loss_fn = lambda b: value_and_grad(params, b, jax.random.key(3))[0]
  (loss, aux), (loss2, aux2), (loss_a, aux_a), (loss_b, _), (loss_real, _) = (
      loss_fn(b) for b in _masking_batches(method.config.feature_dim))
  np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
  for key in aux:
    np.testing.assert_allclose(np.asarray(aux2[key]), np.asarray(aux[key]), rtol=1e-6, err_msg=key)
  np.testing.assert_allclose(float(loss_b), float(loss_a), rtol=1e-6)
  assert abs(float(loss_real) - float(loss_a)) > 1e-5
  if stage == 1:
    assert float(aux_a["smooth"][1]) == 3.0


def test_smooth_on_mean_matches_numpy(eager):
  _, batch, params, ref = eager
  method = hal.make_method(_config(dropout=0.0, smooth_on_mean=True), LABELS)
  _, aux = method.loss(params, batch, jax.random.key(1), 1)
  frames = lambda layer: np.asarray(ref.layer_outputs[layer][:, C:])
  total, count = numpy_smooth(frames(1), frames(2), np.asarray(batch["frame_mask"]), np.asarray(batch["batch_mask"]),
                              delta=0.1)
  assert float(aux["smooth"][1]) == count == 3
  np.testing.assert_allclose(float(aux["smooth"][0]), total, rtol=1e-4)
  # The default reads the samples z, not the means.
  _, aux_sampled = eager[0].loss(params, batch, jax.random.key(1), 1)
  assert abs(float(aux_sampled["smooth"][0]) - total) > 1e-3


# Per ablation (configs/hal.py): the weights of L_rec, L_KL, L_s and which parts of L_s (hinge, δ) are on.
ABLATIONS = {
    "rec_only": dict(rec=0.1, kl=0.0, smooth=0.0),
    "kl_only": dict(rec=0.0, kl=1e-3, smooth=0.0),
    "smooth_only": dict(rec=0.0, kl=0.0, smooth=1e-3, hinge=True, delta=0.0),
    "delta_only": dict(rec=0.0, kl=0.0, smooth=1e-3, hinge=False, delta=0.1),
    "full": dict(rec=0.1, kl=1e-3, smooth=1e-3, hinge=True, delta=0.1),
}


@pytest.fixture(scope="module")
def ablation_losses(eager):
  """Stage-1 (loss, aux) of each ablation and of ATBA ("baseline") at the same params and key.

  The log-variance biases make the action samples noisy (σ = e²) and the visual ones nearly their means (σ = e⁻³), so
  S_c > S_v and the hinge is active (at init both taps have σ = 1 and the hinge happens to be 0 on this batch).
  """
  _, batch, params, _ = eager
  params = _with_log_var_bias(params, {"tap_visual": -6.0, "tap_action": 4.0})
  results = {}
  for name in ("baseline",) + tuple(ABLATIONS):
    method = base.make_method(_config(f"test,ablation={name}", dropout=0.0), LABELS)
    results[name] = method.loss(params["encoder"] if name == "baseline" else params, batch, jax.random.key(6), 1)
  return results


def test_baseline_ablation_is_atba():
  config = _config("test,ablation=baseline")
  assert type(base.make_method(config, LABELS)) is atba.Atba and config.num_layers == 3


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_changes_exactly_its_terms(ablation_losses, name):
  baseline_loss, baseline_aux = ablation_losses["baseline"]
  loss, aux = ablation_losses[name]
  weights = ABLATIONS[name]
  # The ATBA part is ATBA's loss exactly (same encoder, no dropout); only the weighted HAL terms are added.
  for key in baseline_aux:
    np.testing.assert_allclose(np.asarray(aux[key]), np.asarray(baseline_aux[key]), rtol=1e-5, err_msg=key)
  smooth = float(aux["smooth"][0]) / float(aux["smooth"][1])
  extra = (weights["rec"] * float(aux["reconstruction"][0]) + weights["kl"] * float(aux["kl"][0])
           + weights["smooth"] * smooth)
  np.testing.assert_allclose(float(loss) - float(baseline_loss), extra, rtol=1e-3, atol=1e-6)
  assert extra > 1e-5


def test_ablation_smooth_terms_split_into_hinge_and_delta(ablation_losses):
  smooth = {name: float(ablation_losses[name][1]["smooth"][0]) for name in ("smooth_only", "delta_only", "full")}
  assert smooth["smooth_only"] > 0 and smooth["delta_only"] > 0
  # Same latents in every ablation: full = hinge part (smooth_only) + δ part (delta_only).
  np.testing.assert_allclose(smooth["full"], smooth["smooth_only"] + smooth["delta_only"], rtol=1e-5)


@pytest.mark.parametrize("name,decoder_matters", [("kl_only", False), ("delta_only", False), ("rec_only", True)])
def test_reconstruction_reaches_the_decoders_only_when_weighted(eager, name, decoder_matters):
  _, batch, params, _ = eager
  method = hal.make_method(_config(f"test,ablation={name}", dropout=0.0), LABELS)

  def loss(decoders):
    p = {**params, **{tap: {**params[tap], "decoder": decoders[tap]} for tap in decoders}}
    return method.loss(p, batch, jax.random.key(7), 1)[0]

  grads = jax.grad(loss)({tap: params[tap]["decoder"] for tap in ("tap_visual", "tap_action")})
  for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
    leaf = np.asarray(leaf)
    assert np.all(np.isfinite(leaf))
    if decoder_matters:
      assert np.abs(leaf).max() > 0, jax.tree_util.keystr(path)
    else:
      np.testing.assert_array_equal(leaf, 0.0, err_msg=jax.tree_util.keystr(path))
