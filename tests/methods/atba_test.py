"""Tests of hal_jax.methods.atba: the three losses against NumPy transcriptions of spec hal_atba.md §6, and the method
end to end on a tiny random batch (stages, gradients, masking, prediction)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import atba as atba_config
from hal_jax.alignment import atba as alignment
from hal_jax.methods import atba
from hal_jax.models import pyramid_transformer as pt

LABELS = ("background", "pour", "stir", "cut")
# Per video: valid (downsampled) frames and transcript; the last row is a padding video as the pipeline makes it.
LENGTHS = (16, 11, 7, 0)
TRANSCRIPTS = ((1, 0, 2), (3, 1), (2, 0, 3), ())
FRAMES, MAX_TRANSCRIPT = 16, 3


def make_batch(feature_dim, seed=0, lengths=LENGTHS, transcripts=TRANSCRIPTS, batch_mask=None):
  """A batch dict as hal_jax.data.segmentation_pipeline makes it (numpy), padded frames filled with large noise."""
  rng = np.random.default_rng(seed)
  size, num_classes = len(lengths), len(LABELS)
  frame_mask = np.arange(FRAMES)[None] < np.array(lengths)[:, None]
  features = np.where(frame_mask[..., None], rng.normal(size=(size, FRAMES, feature_dim)),
                      50.0 * rng.normal(size=(size, FRAMES, feature_dim))).astype(np.float32)
  transcript = np.full((size, MAX_TRANSCRIPT), -1, np.int32)
  video_labels = np.zeros((size, num_classes), np.float32)
  frame_labels = np.full((size, FRAMES), -1, np.int32)
  for b, (length, actions) in enumerate(zip(lengths, transcripts)):
    transcript[b, :len(actions)] = actions
    video_labels[b, list(actions)] = 1.0
    if length:
      for action, frames in zip(actions, np.array_split(np.arange(length), len(actions))):
        frame_labels[b, frames] = action
  real = np.array([length > 0 for length in lengths]) if batch_mask is None else np.asarray(batch_mask)
  return {"features": features, "frame_mask": frame_mask, "frame_labels": frame_labels,
          "num_frames": np.array(lengths, np.int32), "raw_length": 2 * np.array(lengths, np.int32),
          "transcript": transcript, "transcript_mask": transcript >= 0, "video_labels": video_labels,
          "batch_mask": real, "video_index": np.where(real, np.arange(size), -1).astype(np.int32)}


def device_batch(batch):
  return {k: jnp.asarray(v) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------------------------------
# NumPy references (float64), written from spec §6.


def numpy_video_bce(logits, labels, batch_mask):
  p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  per_entry = -(labels * np.log(p) + (1.0 - labels) * np.log(1.0 - p))
  return per_entry[batch_mask].sum(), float(batch_mask.sum() * logits.shape[1])


def numpy_frame_ce(logits, labels, background_id=None, background_weight=1.0):
  total = weight_sum = 0.0
  for b, t in zip(*np.nonzero(labels >= 0)):
    row = logits[b, t].astype(np.float64)
    ce = np.log(np.sum(np.exp(row - row.max()))) + row.max() - row[labels[b, t]]
    weight = background_weight if labels[b, t] == background_id else 1.0
    total += weight * ce
    weight_sum += weight
  return total, weight_sum


def numpy_contrast(frame_tokens, class_tokens, labels, batch_mask, temperature):
  """Spec §6 L_glc, one video and one class at a time; returns (sum over counted videos, their number)."""
  unit = lambda x: x / max(np.linalg.norm(x), 1e-12)
  total, videos = 0.0, 0
  for i in range(labels.shape[0]):
    classes = sorted(set(labels[i][labels[i] >= 0].tolist()))
    if not batch_mask[i] or not classes:
      continue
    terms = []
    for k in classes:
      g = unit(frame_tokens[i][labels[i] == k].astype(np.float64).mean(axis=0))
      z = np.array([g @ unit(class_tokens[i, c].astype(np.float64)) for c in range(class_tokens.shape[1])])
      z = z / temperature
      terms.append(-(z[k] - np.log(np.sum(np.exp(z)))))
    total += np.mean(terms)
    videos += 1
  return total, videos


# ---------------------------------------------------------------------------------------------------------------------
# The loss functions.


def test_video_bce_matches_numpy_and_skips_padding_videos():
  rng = np.random.default_rng(0)
  logits = rng.normal(scale=2.0, size=(3, 4)).astype(np.float32)
  labels = (rng.random((3, 4)) < 0.5).astype(np.float32)
  batch_mask = np.array([True, False, True])
  total, count = atba.video_bce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(batch_mask))
  expected_total, expected_count = numpy_video_bce(logits, labels, batch_mask)
  np.testing.assert_allclose(float(total), expected_total, rtol=1e-5)
  assert float(count) == expected_count == 8.0
  # The padding video's entries are really excluded: garbage there changes nothing.
  logits[1] = 1e4
  total2, _ = atba.video_bce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(batch_mask))
  assert float(total2) == float(total)


def test_video_bce_hand_worked_value():
  # logit 0 gives log 2 whatever the label; logit log 3 with label 1 gives -log(3/4).
  total, count = atba.video_bce(jnp.array([[0.0, np.log(3.0)]]), jnp.array([[0.0, 1.0]]), jnp.array([True]))
  np.testing.assert_allclose(float(total), np.log(2.0) - np.log(0.75), rtol=1e-6)
  assert float(count) == 2.0


@pytest.mark.parametrize("background_id,background_weight", [(None, 1.0), (0, 1.0), (0, 0.8), (2, 0.5)])
def test_frame_cross_entropy_matches_numpy(background_id, background_weight):
  rng = np.random.default_rng(1)
  logits = rng.normal(scale=2.0, size=(2, 6, 3)).astype(np.float32)
  labels = np.array([[0, 0, 1, 1, 2, -1], [2, 0, -1, 1, -1, -1]], np.int32)
  total, weight = atba.frame_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), background_id,
                                           background_weight)
  expected_total, expected_weight = numpy_frame_ce(logits, labels, background_id, background_weight)
  np.testing.assert_allclose(float(total), expected_total, rtol=1e-5)
  np.testing.assert_allclose(float(weight), expected_weight, rtol=1e-6)
  # Pooled over the 8 labelled frames of the batch (not a per-video mean), -1 ignored.
  if background_weight == 1.0:
    assert float(weight) == 8.0


def test_frame_cross_entropy_background_weight_is_a_weighted_mean():
  # Two frames with CE log 2 (uniform logits) labelled background, one with CE a labelled class 1.
  logits = np.zeros((1, 3, 2), np.float32)
  logits[0, 2] = [0.0, 3.0]
  labels = np.array([[0, 0, 1]], np.int32)
  total, weight = atba.frame_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 0, 0.8)
  ce_fg = np.log(1.0 + np.exp(-3.0))
  np.testing.assert_allclose(float(total) / float(weight), (0.8 * 2 * np.log(2.0) + ce_fg) / (0.8 * 2 + 1), rtol=1e-6)


def _contrast_inputs(seed=0):
  rng = np.random.default_rng(seed)
  num_videos, frames, classes, hidden = 4, 10, 5, 6
  frame_tokens = rng.normal(size=(num_videos, frames, hidden)).astype(np.float32)
  class_tokens = rng.normal(size=(num_videos, classes, hidden)).astype(np.float32)
  labels = np.array([
      [3, 3, 0, 0, 3, 3, 3, 1, -1, -1],   # class 3 in two segments (pooled), classes 2 and 4 absent
      [4, 4, 4, 4, 4, 4, 4, 4, 4, 4],     # one class only
      [-1] * 10,                          # no pseudo-labels (e.g. T_v < M): excluded
      [2, 2, 0, 0, 1, -1, -1, -1, -1, -1],  # a padding video below: excluded
  ], np.int32)
  batch_mask = np.array([True, True, True, False])
  return frame_tokens, class_tokens, labels, batch_mask


def test_global_local_contrast_matches_numpy_loop():
  frame_tokens, class_tokens, labels, batch_mask = _contrast_inputs()
  total, count = atba.global_local_contrast(jnp.asarray(frame_tokens), jnp.asarray(class_tokens),
                                            jnp.asarray(labels), jnp.asarray(batch_mask), 0.2)
  expected_total, expected_count = numpy_contrast(frame_tokens, class_tokens, labels, batch_mask, 0.2)
  assert expected_count == 2
  assert float(count) == expected_count
  np.testing.assert_allclose(float(total), expected_total, rtol=1e-5)
  # Another temperature gives another value (τ is used), still equal to the reference.
  total_t, _ = atba.global_local_contrast(jnp.asarray(frame_tokens), jnp.asarray(class_tokens),
                                          jnp.asarray(labels), jnp.asarray(batch_mask), 1.0)
  np.testing.assert_allclose(float(total_t), numpy_contrast(frame_tokens, class_tokens, labels, batch_mask, 1.0)[0],
                             rtol=1e-5)
  assert abs(float(total_t) - float(total)) > 1e-2


def test_global_local_contrast_uses_all_class_tokens_in_the_denominator():
  # One video labelled class 0 only; moving the token of the absent class 1 onto the video's mean must raise the loss.
  frame_tokens = jnp.array([[[1.0, 0.0], [1.0, 0.0]]])
  labels = jnp.array([[0, 0]], jnp.int32)
  far = jnp.array([[[1.0, 0.0], [-1.0, 0.0]]])
  near = jnp.array([[[1.0, 0.0], [1.0, 0.1]]])
  mask = jnp.array([True])
  loss_far, _ = atba.global_local_contrast(frame_tokens, far, labels, mask, 0.2)
  loss_near, _ = atba.global_local_contrast(frame_tokens, near, labels, mask, 0.2)
  np.testing.assert_allclose(float(loss_far), np.log1p(np.exp(-10.0)), atol=1e-6)  # z = (5, -5)
  assert float(loss_near) > 0.6


def test_global_local_contrast_gradient_skips_class_tokens_and_is_finite_with_absent_classes():
  frame_tokens, class_tokens, labels, batch_mask = _contrast_inputs()
  args = lambda f, c: (f, c, jnp.asarray(labels), jnp.asarray(batch_mask), 0.2)
  loss = lambda f, c: atba.global_local_contrast(*args(f, c))[0]
  grad_frames, grad_classes = jax.grad(loss, argnums=(0, 1))(jnp.asarray(frame_tokens), jnp.asarray(class_tokens))
  grad_frames, grad_classes = np.asarray(grad_frames), np.asarray(grad_classes)
  # Detached class tokens: exactly no gradient, although the value depends on them.
  np.testing.assert_array_equal(grad_classes, 0.0)
  assert abs(float(loss(jnp.asarray(frame_tokens), jnp.asarray(class_tokens[::-1]))) -
             float(loss(jnp.asarray(frame_tokens), jnp.asarray(class_tokens)))) > 1e-3
  # Absent classes (zero means) once gave NaN through the norm of a zero vector.
  assert np.all(np.isfinite(grad_frames))
  # Labelled frames of counted videos get gradient; unlabelled frames and excluded videos get none.
  assert np.all(np.abs(grad_frames[0, :8]).sum(-1) > 0)
  np.testing.assert_array_equal(grad_frames[0, 8:], 0.0)
  np.testing.assert_array_equal(grad_frames[2:], 0.0)


def test_global_local_contrast_gradient_finite_when_a_class_mean_is_zero():
  # A present class whose tokens average to exactly zero: the normalisation's max(‖x‖, eps) branch.
  frame_tokens = jnp.array([[[1.0, 2.0], [-1.0, -2.0], [0.5, 0.0]]])
  class_tokens = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])
  labels, mask = jnp.array([[0, 0, 1]], jnp.int32), jnp.array([True])
  loss = lambda f: atba.global_local_contrast(f, class_tokens, labels, mask, 0.2)[0]
  assert np.isfinite(float(loss(frame_tokens)))
  assert np.all(np.isfinite(np.asarray(jax.grad(loss)(frame_tokens))))


# ---------------------------------------------------------------------------------------------------------------------
# The method end to end.


def _config(**overrides):
  config = atba_config.get_config("test")
  with config.unlocked():
    config.update(overrides)
  return config


def _reference_model(config):
  """The bare encoder, built here from the config (not through the method)."""
  return pt.PyramidTransformer(num_classes=len(LABELS), max_positions=config.max_positions,
                               hidden_dim=config.hidden_dim, num_layers=config.num_layers, num_heads=config.num_heads)


@pytest.fixture(scope="module")
def setup():
  """Method, batch, params and the jitted functions every end-to-end test shares.

  Each jitted function also returns what its checks need from the same forward pass, so that the module compiles
  three programs in all (compilation dominates the run time).
  """
  method = atba.make_method(_config(), LABELS)
  c = method.config
  batch = device_batch(make_batch(c.feature_dim))
  params = jax.jit(method.init)(jax.random.key(0), batch)

  def stage0(p, b, rng):
    return method.loss(p, b, rng, 0), method.forward(p, b, rng)

  def stage1(p, b, rng):
    outputs = method.forward(p, b, rng)
    # Pseudo-labels straight from the alignment module, on the forward pass the loss sees.
    labels = alignment.pseudo_labels_batch(
        outputs.frame_logits, b["num_frames"], b["transcript"], jnp.sum(b["transcript_mask"], axis=1),
        boundary_kernel=c.boundary_kernel, boundary_scale=c.boundary_scale, transition_kernel=c.transition_kernel,
        candidate_multiplier=c.candidate_multiplier)
    return jax.value_and_grad(method.loss, has_aux=True)(p, b, rng, 1), outputs, labels

  def predict(p, b):
    return method.predict(p, b), _reference_model(c).apply({"params": p}, b["features"], b["frame_mask"],
                                                           return_layer_states=True)

  fns = {"stage0": jax.jit(stage0), "stage1": jax.jit(stage1), "predict": jax.jit(predict)}
  return method, batch, params, fns


def _loss_fn(fns, params, rng, stage):
  """batch -> (loss, aux) of `stage` through the shared compiled functions."""
  if stage == 0:
    return lambda b: fns["stage0"](params, b, rng)[0]
  return lambda b: fns["stage1"](params, b, rng)[0][0]


def test_make_method_and_stages():
  method = atba.make_method(_config(), LABELS)
  assert method.num_classes == 4 and method.background_id == 0 and method.name == "atba"
  assert atba.make_method(_config(background="cut"), LABELS).background_id == 3
  assert atba.make_method(_config(background=""), LABELS).background_id is None
  assert [method.stage_for_epoch(e) for e in range(4)] == [0, 0, 1, 1]  # "test": stage_epoch = 2.


def test_init_shapes(setup):
  method, _, params, _ = setup
  c = method.config
  assert params["class_tokens"].shape == (4, c.hidden_dim)
  assert params["position_embedding"].shape == (c.max_positions, c.hidden_dim)
  assert params["input_projection"]["kernel"].shape == (c.feature_dim, c.hidden_dim)
  assert params["classifier"]["kernel"].shape == (c.hidden_dim, 4)
  assert sorted(k for k in params if k.startswith("layer_")) == [f"layer_{i}" for i in range(c.num_layers)]


def test_stage0_is_the_video_bce_only(setup):
  _, batch, params, fns = setup
  (loss, aux), outputs = fns["stage0"](params, batch, jax.random.key(1))
  assert set(aux) == {"video_bce"}
  total, count = numpy_video_bce(np.asarray(outputs.video_logits), np.asarray(batch["video_labels"]),
                                 np.asarray(batch["batch_mask"]))
  assert count == 12.0 and float(aux["video_bce"][1]) == count
  np.testing.assert_allclose(float(aux["video_bce"][0]), total, rtol=1e-5)
  np.testing.assert_allclose(float(loss), total / count, rtol=1e-5)
  # Dropout is on in training: another key gives another loss.
  (loss2, _), _ = fns["stage0"](params, batch, jax.random.key(2))
  assert float(loss2) != float(loss)


def test_stage1_adds_frame_ce_and_contrast(setup):
  _, batch, params, fns = setup
  ((loss, aux), _), outputs, labels = fns["stage1"](params, batch, jax.random.key(1))
  assert set(aux) == {"video_bce", "frame_ce", "contrast", "pseudo_label_accuracy"}
  assert np.isfinite(float(loss))
  labels = np.where(np.asarray(batch["frame_mask"]), np.asarray(labels), -1)
  assert (labels[:3] >= 0).any(axis=1).all(), "the test batch should give every real video pseudo-labels"
  fr_total, fr_weight = numpy_frame_ce(np.asarray(outputs.frame_logits), labels, 0, 1.0)
  glc_total, glc_count = numpy_contrast(np.asarray(outputs.frame_tokens), np.asarray(outputs.class_tokens), labels,
                                        np.asarray(batch["batch_mask"]), 0.2)
  np.testing.assert_allclose(float(aux["frame_ce"][0]), fr_total, rtol=1e-4)
  assert float(aux["frame_ce"][1]) == fr_weight == (labels >= 0).sum()
  np.testing.assert_allclose(float(aux["contrast"][0]), glc_total, rtol=1e-4)
  assert float(aux["contrast"][1]) == glc_count == 3
  vid_total, vid_count = aux["video_bce"]
  expected = float(vid_total) / float(vid_count) + fr_total / fr_weight + 0.1 * glc_total / glc_count
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  agree = np.sum((labels >= 0) & (labels == np.asarray(batch["frame_labels"])))
  assert float(aux["pseudo_label_accuracy"][0]) == agree


def test_stage1_gradients_finite_and_nonzero_everywhere(setup):
  _, batch, params, fns = setup
  (_, grads), _, _ = fns["stage1"](params, batch, jax.random.key(1))
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  assert len(flat) == len(jax.tree.leaves(params))
  for path, leaf in flat:
    leaf = np.asarray(leaf)
    name = jax.tree_util.keystr(path)
    assert np.all(np.isfinite(leaf)), name
    assert np.abs(leaf).max() > 0, name
  # Only the first T rows of the positional table are used.
  np.testing.assert_array_equal(np.asarray(grads["position_embedding"])[FRAMES:], 0.0)


@pytest.mark.parametrize("stage", [0, 1])
def test_loss_ignores_padded_frames(setup, stage):
  _, batch, params, fns = setup
  loss_fn = _loss_fn(fns, params, jax.random.key(2), stage)
  loss, aux = loss_fn(batch)
  features = np.array(batch["features"])
  mask = np.asarray(batch["frame_mask"])
  changed = features.copy()
  changed[~mask] = np.random.default_rng(3).normal(scale=100.0, size=changed[~mask].shape)
  loss2, aux2 = loss_fn({**batch, "features": jnp.asarray(changed)})
  np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
  for key in aux:
    np.testing.assert_allclose(np.asarray(aux2[key]), np.asarray(aux[key]), rtol=1e-6, err_msg=key)
  # Control: changing one valid frame does change the loss, so the comparison above can fail.
  control = features.copy()
  control[1, 3] += 5.0
  assert abs(float(loss_fn({**batch, "features": jnp.asarray(control)})[0]) - float(loss)) > 1e-5


@pytest.mark.parametrize("stage", [0, 1])
def test_loss_ignores_a_video_with_batch_mask_false(setup, stage):
  """A batch_mask=False video that still has valid frames and a transcript contributes nothing."""
  method, _, params, fns = setup
  loss_fn = _loss_fn(fns, params, jax.random.key(4), stage)
  lengths, transcripts = (16, 11, 7, 9), TRANSCRIPTS[:3] + ((0, 1),)
  batches = [make_batch(method.config.feature_dim, lengths=lengths, transcripts=transcripts, batch_mask=mask)
             for mask in ([True, True, True, False],) * 2 + ([True] * 4,)]
  batches[1]["features"][3] = np.random.default_rng(9).normal(size=batches[1]["features"][3].shape)
  (loss, aux), (loss2, _), (loss_real, aux_real) = (loss_fn(device_batch(b)) for b in batches)
  np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
  # Control: the same batch with the fourth video real gives another loss.
  assert abs(float(loss_real) - float(loss)) > 1e-5
  assert float(aux["video_bce"][1]) == 12.0 and float(aux_real["video_bce"][1]) == 16.0
  if stage == 1:
    assert float(aux["contrast"][1]) == 3.0 and float(aux_real["contrast"][1]) == 4.0


def test_predict_shapes_values_and_determinism(setup):
  method, batch, params, fns = setup
  c = method.config
  out, ref = fns["predict"](params, batch)
  assert set(out) == {"frame_logits", "video_logits", "visual_latent", "action_latent"}
  assert out["frame_logits"].shape == (4, FRAMES, 4)
  assert out["video_logits"].shape == (4, 4)
  assert out["visual_latent"].shape == out["action_latent"].shape == (4, FRAMES, c.hidden_dim)
  # Eval mode equals the bare encoder; the latents are the frame tokens after layers z_layer and z_layer + 1.
  expected = {"frame_logits": ref.frame_logits, "video_logits": ref.video_logits,
              "visual_latent": ref.layer_outputs[c.z_layer][:, 4:],
              "action_latent": ref.layer_outputs[c.z_layer + 1][:, 4:]}
  for key, value in expected.items():
    np.testing.assert_allclose(np.asarray(out[key]), np.asarray(value), rtol=1e-5, atol=1e-5, err_msg=key)
  assert not np.allclose(np.asarray(out["visual_latent"]), np.asarray(out["action_latent"]))
  again, _ = fns["predict"](params, batch)
  for key in out:
    np.testing.assert_array_equal(np.asarray(again[key]), np.asarray(out[key]))
  # Padded frames do not leak into the valid frames' predictions.
  mask = np.asarray(batch["frame_mask"])
  features = np.array(batch["features"])
  features[~mask] *= -3.0
  changed, _ = fns["predict"](params, {**batch, "features": jnp.asarray(features)})
  np.testing.assert_allclose(np.asarray(changed["frame_logits"])[mask], np.asarray(out["frame_logits"])[mask],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(changed["video_logits"])[:3], np.asarray(out["video_logits"])[:3],
                             rtol=1e-5, atol=1e-5)
