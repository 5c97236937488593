"""Tests for hal_jax.methods.ahlm: MIL and DFC losses, masking, ablation switches, predict / postprocess, and change
points recovered on piecewise-constant features."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import ahlm as ahlm_config
from hal_jax.tasks import localization as localization_task
from hal_jax.methods import ahlm
from hal_jax.methods import ahlm_inference
from hal_jax.methods import base
from hal_jax.models import hierarchical_vae

B, T, D, C = 2, 12, 16, 3


def make_config(ablation="full", **overrides):
  config = ahlm_config.get_config(f"test,ablation={ablation}")
  config.unlock()
  config.update(overrides)
  config.lock()
  return config


def make_batch(length=T, num_frames=(T, 7), seed=0):
  rng = np.random.default_rng(seed)
  num_frames = np.array(num_frames, np.int32)
  mask = np.arange(length)[None] < num_frames[:, None]
  features = rng.normal(size=(B, length, D)).astype(np.float32) * mask[..., None]
  labels = np.zeros((B, C), np.float32)
  labels[0, [0, 2]] = 1.0
  labels[1, 1] = 1.0
  return {"features": features, "frame_mask": mask, "num_frames": num_frames, "video_labels": labels,
          "batch_mask": np.ones(B, bool), "video_index": np.arange(B, dtype=np.int32)}


def pad_time(batch, extra):
  out = dict(batch)
  out["features"] = np.pad(batch["features"], ((0, 0), (0, extra), (0, 0)))
  out["frame_mask"] = np.pad(batch["frame_mask"], ((0, 0), (0, extra)))
  return out


def test_module_names_its_task_and_builds_the_method():
  assert ahlm.TASK is base.Task.LOCALIZATION
  method = base.make_method(make_config(), ("a", "b", "c"))
  assert method.num_classes == 3 and method.stage_for_epoch(7) == 0


def test_presets_carry_the_paper_hyper_parameters_and_every_ablation_builds():
  thumos = ahlm_config.get_config("thumos14")
  assert (thumos.train_length, thumos.batch_size, thumos.learning_rate, thumos.weight_decay) == (750, 16, 1e-4, 5e-4)
  assert (thumos.change_alpha, thumos.beta_min, thumos.beta_max, thumos.lcs_cosine) == (0.15, 0.15, 0.9, 0.65)
  method = ahlm.make_method(thumos, ("a", "b"))  # A constant learning rate:
  assert float(method.learning_rate(0)) == float(method.learning_rate(thumos.num_epochs - 1)) == np.float32(1e-4)
  net = ahlm_config.get_config("activitynet")
  assert (net.train_length, net.batch_size, net.snap_window, net.tiou_thresholds) == (150, 64, 2, "0.5:0.95:0.05")
  assert len(ahlm_config.get_config().attention_thresholds) == 17
  for ablation in ("fg", "fg_elbo", "fg_bg", "fg_bg_elbo", "fg_bg_ct", "full"):
    config = ahlm_config.get_config(f"synthetic,ablation={ablation}")
    assert config.use_dfc == ablation.endswith(("elbo", "full"))
  with pytest.raises(ValueError, match="ablation"):
    ahlm_config.get_config("synthetic,ablation=nope")


def test_mil_losses_by_hand():
  logits = np.zeros((1, 3, 3), np.float32)  # C = 2 + background; uniform softmax: log p = -log 3
  logits[0, 0] = [2.0, 0.0, 0.0]
  labels = np.array([[1.0, 1.0]], np.float32)
  losses = ahlm.mil_losses(jnp.asarray(logits), jnp.asarray(labels), jnp.array([True]))
  log_p_fg = jax.nn.log_softmax(jnp.asarray(logits[0, 0]))
  np.testing.assert_allclose(losses["foreground"][0], -(0.5 * log_p_fg[0] + 0.5 * log_p_fg[1]), rtol=1e-6)
  np.testing.assert_allclose(losses["context"][0], np.log(3.0), rtol=1e-6)  # target [1, 1, 1] / 3
  np.testing.assert_allclose(losses["background"][0], np.log(3.0), rtol=1e-6)
  # A video without labels counts for context and background but not for the foreground.
  none = ahlm.mil_losses(jnp.asarray(logits), jnp.zeros((1, 2)), jnp.array([True]))
  assert float(none["foreground"][1]) == 0.0 and float(none["background"][1]) == 1.0
  padding = ahlm.mil_losses(jnp.asarray(logits), jnp.asarray(labels), jnp.array([False]))
  assert all(float(count) == 0.0 for _, count in padding.values())


def test_dfc_losses_are_per_video_means_over_valid_snippets():
  features = jnp.ones((2, 4, 1))
  mask = jnp.array([[True] * 4, [True, True, False, False]])
  outputs = hierarchical_vae.DFCOutputs(
      reconstruction=jnp.zeros((2, 4, 1)), kl1=jnp.where(mask, 1.0, 0.0), kl2=jnp.array([[2.0, 0, 0, 0]] * 2),
      change_points=jnp.zeros((2, 4), bool), betas=jnp.zeros((2, 4)), kl_static=jnp.zeros((2, 4)),
      kl_change=jnp.zeros((2, 4)), v1=jnp.zeros((2, 4, 1)), v2=jnp.zeros((2, 4, 1)))
  losses = ahlm.dfc_losses(features, mask, jnp.array([True, True]), outputs)
  # Video 0: 0.5 + 1 + 2/4; video 1: 0.5 + 1 + 2/2.
  np.testing.assert_allclose(losses["dfc"][0], 2.0 + 2.5, rtol=1e-6)
  np.testing.assert_allclose(losses["dfc_kl2"][0], 0.5 + 1.0, rtol=1e-6)
  assert float(losses["dfc"][1]) == 2.0


@pytest.fixture(scope="module")
def trained_setup():
  method = ahlm.make_method(make_config(dropout=0.0), ("a", "b", "c"))
  batch = make_batch()
  params = jax.jit(method.init)(jax.random.key(0), batch)
  return method, batch, params


def test_loss_is_finite_logs_every_term_and_has_gradients_everywhere(trained_setup):
  method, batch, params = trained_setup
  (loss, aux), grads = jax.jit(jax.value_and_grad(lambda p: method.loss(p, batch, jax.random.key(1), 0),
                                                  has_aux=True))(params)
  assert np.isfinite(loss)
  assert set(aux) == {"foreground", "context", "background", "dfc", "dfc_reconstruction", "dfc_kl1", "dfc_kl2",
                      "change_point_rate"}
  means = {k: float(s) / float(c) for k, (s, c) in aux.items()}
  np.testing.assert_allclose(float(loss), means["foreground"] + means["context"] + means["background"] +
                             means["dfc"], rtol=1e-5)
  assert 0.0 <= means["change_point_rate"] <= 100.0
  for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(leaf)), path
  assert set(params) == {"efc", "dfc"}


def test_loss_ignores_time_padding_and_padding_videos(trained_setup):
  method, batch, params = trained_setup
  loss = jax.jit(lambda p, b: method.loss(p, b, jax.random.key(2), 0))
  reference, reference_aux = loss(params, batch)
  padded, padded_aux = loss(params, pad_time(batch, 9))
  np.testing.assert_allclose(padded, reference, rtol=1e-5)
  np.testing.assert_allclose(padded_aux["change_point_rate"][0], reference_aux["change_point_rate"][0])
  extra = {k: np.concatenate([v, np.zeros_like(v[:1])]) for k, v in batch.items()}  # one padding video
  extra["video_index"][-1] = -1
  more, _ = loss(params, extra)
  np.testing.assert_allclose(more, reference, rtol=1e-5)


def test_ablation_switches_drop_terms_and_the_dfc():
  batch = make_batch()
  efc_only = ahlm.make_method(make_config("fg_bg_ct", dropout=0.0), ("a", "b", "c"))
  params = jax.jit(efc_only.init)(jax.random.key(0), batch)
  assert set(params) == {"efc"}
  loss, aux = efc_only.loss(params, batch, jax.random.key(1), 0)
  assert "dfc" not in aux
  fg = ahlm.make_method(make_config("fg", dropout=0.0), ("a", "b", "c"))
  fg_loss, fg_aux = fg.loss(params, batch, jax.random.key(1), 0)
  np.testing.assert_allclose(fg_loss, fg_aux["foreground"][0] / fg_aux["foreground"][1], rtol=1e-6)
  assert float(loss) > float(fg_loss)
  outputs = jax.device_get(efc_only.predict(params, batch))
  assert not {"change_points", "action_latent", "visual_latent"} & set(outputs)
  results = efc_only.postprocess(batch, outputs)
  assert all("change_points" not in r for r in results)


def test_predict_and_postprocess(trained_setup):
  method, batch, params = trained_setup
  batch = dict(batch, batch_mask=np.array([True, False]))
  outputs = jax.device_get(jax.jit(method.predict)(params, batch))
  assert outputs["cas_logits"].shape == (B, T, C + 1)
  assert outputs["attention"].shape == (B, T, 3)
  assert outputs["video_probs"].shape == (B, C + 1)
  assert outputs["change_points"].shape == (B, T) and outputs["change_points"].dtype == bool
  assert outputs["action_latent"].shape == outputs["visual_latent"].shape == (B, T, method.config.latent_dim)
  np.testing.assert_allclose(outputs["video_probs"].sum(axis=1), 1.0, rtol=1e-5)
  results = method.postprocess(batch, outputs)
  assert results[1] is None
  detections = results[0]["detections"]
  assert detections.ndim == 2 and detections.shape[1] == 4 and len(detections) > 0
  assert np.all((detections[:, 2] >= 0) & (detections[:, 3] <= T) & (detections[:, 2] < detections[:, 3]))
  assert set(results[0]["change_points"]) <= set(results[0]["raw_change_points"])


def piecewise_constant(rng, batch, length, dim):
  """Features constant on random segments of 5-12 snippets (+ noise) and the true boundaries."""
  features = np.zeros((batch, length, dim), np.float32)
  boundaries = []
  for b in range(batch):
    position, points = 0, []
    while position < length:
      size = int(rng.integers(5, 13))
      features[b, position:position + size] = rng.normal(size=dim)
      position += size
      if position < length:
        points.append(position)
    boundaries.append(np.array(points))
  return features + 0.1 * rng.normal(size=features.shape).astype(np.float32), boundaries


def test_dfc_change_points_recover_piecewise_constant_boundaries():
  # Spec §9: after training, the change points (DFC, then LCS pruning as at inference) match the true boundaries
  # within ±2 snippets with F1 >= 0.8, and the raw DFC points miss almost none of them (the rule over-segments).
  rng = np.random.default_rng(0)
  batch_size, length, dim = 6, 48, 12
  features, truth = piecewise_constant(rng, batch_size, length, dim)
  mask = jnp.ones((batch_size, length), bool)
  model = hierarchical_vae.HierarchicalVAE(encoder_dim=16, gru_dim=8, latent_dim=4, head_dim=8)
  tx = optax.adam(3e-3)

  def loss(params, key):
    outputs = model.apply({"params": params}, features, mask, ahlm.snippet_noise(key, batch_size, length, 4))
    return ahlm.dfc_losses(features, mask, jnp.ones(batch_size, bool), outputs)["dfc"][0]

  @jax.jit
  def step(params, opt_state, key):
    updates, opt_state = tx.update(jax.grad(loss)(params, key), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params = jax.jit(model.init)(jax.random.key(0), features, mask)["params"]
  opt_state = tx.init(params)
  for key in jax.random.split(jax.random.key(1), 30):
    params, opt_state = step(params, opt_state, key)
  change_points = np.asarray(jax.jit(model.apply)({"params": params}, features, mask).change_points)
  matched = predicted = raw_matched = 0
  for raw, points, video in zip(change_points, truth, features):
    raw = np.flatnonzero(raw)
    pruned = ahlm_inference.lcs_prune(video.astype(np.float64), raw, 0.65, 0.5)
    matched += localization_task.boundary_matches(pruned, points, 2)
    raw_matched += localization_task.boundary_matches(raw, points, 2)
    predicted += len(pruned)
  total = sum(len(points) for points in truth)
  precision, recall = matched / max(predicted, 1), matched / total
  assert 2 * precision * recall / (precision + recall) >= 0.8
  assert raw_matched / total >= 0.9
