"""Tests of hal_jax.methods.haan: losses, gradient routing, the refresh, inference and the presets."""

import functools
import importlib.util
import math
import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax import errors
from hal_jax.methods import haan
from hal_jax.models import concepts


def _load_configs():
  path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "haan.py")
  spec = importlib.util.spec_from_file_location("haan_configs", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


CONFIGS = _load_configs()
CLASSES = ("a0", "a1", "a2", "b0", "b1")  # Fine classes 0-2 under coarse 0, 3-4 under coarse 1.
FINE_TO_COARSE = [0, 0, 0, 1, 1]


def _config(**overrides):
  config = CONFIGS.get_config("test")
  with config.unlocked():
    config.update({**dict(feature_dim=6, hidden_dim=8, num_concepts=4, top_k=2, train_length=12,
                          refresh_chunk_size=16, cluster_sample_rate=0.5, dropout=0.0), **overrides})
  return config


def _clips(seed=0, lengths=(7, 12, 5, 9)):
  rng = np.random.default_rng(seed)
  lengths = np.array(lengths, np.int64)
  labels = np.zeros([len(lengths), len(CLASSES)], np.float32)
  labels[0, [0, 1]] = labels[1, 3] = labels[2, [2, 4]] = labels[3, 0] = 1.0
  return haan.TrainingClips(features=rng.normal(size=[int(lengths.sum()), 6]).astype(np.float32), lengths=lengths,
                            video_labels=labels, fine_to_coarse=np.array(FINE_TO_COARSE))


def _batch(clips, rows=(1, 0, 3, -1), length=12):
  """A training batch of whole videos `rows` (-1 = padding video) padded to `length` clips."""
  offsets = clips.offsets
  features = np.zeros([len(rows), length, clips.features.shape[1]], np.float32)
  mask = np.zeros([len(rows), length], bool)
  labels = np.zeros([len(rows), len(CLASSES)], np.float32)
  for i, v in enumerate(rows):
    if v >= 0:
      n = clips.lengths[v]
      features[i, :n] = clips.features[offsets[v]:offsets[v] + n]
      mask[i, :n] = True
      labels[i] = clips.video_labels[v]
  rows = np.array(rows, np.int32)
  return {"features": jnp.asarray(features), "frame_mask": jnp.asarray(mask), "video_labels": jnp.asarray(labels),
          "batch_mask": jnp.asarray(rows >= 0), "video_index": jnp.asarray(rows),
          "num_frames": jnp.asarray(mask.sum(1).astype(np.int32))}


@pytest.fixture(scope="module")
def trained_setup():
  """Method, clips, params and the state after one refresh (shared: the refresh compiles once).

  k-means is fitted on every clip (sample rate 1), so its partition is checkable against the encodings.
  """
  method = haan.make_method(_config(cluster_sample_rate=1.0), CLASSES)
  clips = _clips()
  batch = _batch(clips)
  params = jax.jit(method.init)(jax.random.key(0), batch)
  state = method.init_state(clips)
  state, info = method.refresh(params, state, clips, jax.random.key(1))
  return method, clips, batch, params, state, info


def test_mil_pool_matches_eq1_with_ties_and_masks():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=[3, 6, 4]).astype(np.float32)
  logits[0, :3, 0] = [1.0, 2.0, 3.0]  # Mean 2 exactly: the clip at the mean is kept (>=).
  mask = np.ones([3, 6], bool)
  mask[0, 3:] = False
  mask[1, 4:] = False
  got = np.asarray(haan.mil_pool(jnp.asarray(logits), jnp.asarray(mask)))
  for b in range(3):
    for j in range(4):
      s = logits[b, mask[b], j]
      kept = s[s >= s.mean()]
      assert got[b, j] == pytest.approx(kept.mean(), rel=1e-5)
  assert got[0, 0] == pytest.approx(2.5)


def test_balanced_bce_matches_hand_computation():
  logits = jnp.array([[2.0, -1.0]])
  labels = jnp.array([[1.0, 0.0]])
  weights = jnp.array([[0.5, 4.0], [3.0, 2.0]])  # ω(0), ω(1) per class.
  expected = (3.0 * math.log1p(math.exp(-2.0)) + 4.0 * math.log1p(math.exp(-1.0))) / 2
  np.testing.assert_allclose(haan.balanced_bce(logits, labels, weights), [expected], rtol=1e-6)


def test_class_balance_weights():
  labels = np.array([[1, 0], [1, 0], [0, 0], [1, 0]], np.float32)
  np.testing.assert_allclose(haan.class_balance_weights(labels), [[2.0, 0.5], [2 / 3, 2.0]])


def test_pseudo_label_loss_matches_pytorch_weighted_mean_over_t():
  logits = jnp.array([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]]])
  labels = jnp.array([[0, 1, 3, 2]])  # Clip 2 is void; clip 3 is padding.
  mask = jnp.array([[True, True, True, False]])
  rho = jnp.array([0.5, 0.25, 0.25])
  ce = [-jax.nn.log_softmax(logits[0, 0])[0], -jax.nn.log_softmax(logits[0, 1])[1]]
  expected = (0.5 * ce[0] + 0.25 * ce[1]) / 0.75 / 3  # Weighted mean over labelled clips, then / T = 3.
  np.testing.assert_allclose(jax.jit(haan.pseudo_label_loss)(logits, labels, rho, mask), [expected], rtol=1e-6)


def test_cluster_weights():
  labels = jnp.array([0, 0, 1, 0])
  np.testing.assert_allclose(haan.cluster_weights(labels, 3), [0.75, 0.25, 0.0])
  np.testing.assert_allclose(haan.cluster_weights(labels, 3, haan.INVERSE_FREQUENCY), [4 / 9, 4 / 3, 0.0],
                             rtol=1e-6)


def test_concept_loss_averages_present_classes():
  w = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  e = jnp.array([[[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
  labels = jnp.array([[1.0, 1.0, 0.0]])
  expected = ((1 - 1.0) + (1 - 1 / math.sqrt(2))) / 2
  np.testing.assert_allclose(haan.concept_loss(w, e, labels), [expected], rtol=1e-6)
  euclid = haan.concept_loss(w, e, labels, concepts.EUCLIDEAN)
  np.testing.assert_allclose(euclid, [(1.0 + 1.0) / 2], rtol=1e-6)


def test_init_state_constants():
  method = haan.make_method(_config(), CLASSES)
  state = method.init_state(_clips())
  assert state.pseudo_labels.shape == (4, 12) and np.all(np.asarray(state.pseudo_labels) == 4)
  np.testing.assert_array_equal(state.membership, [[1, 1, 1, 0, 0], [0, 0, 0, 1, 1]])
  # Fine class 0 is in 2 of 4 videos: ω(1) = C / 2, ω(0) = C / 2; coarse 0 in 3 of 4: ω'(1) = 2/3, ω'(0) = 2.
  np.testing.assert_allclose(state.fine_weights[:, 0], [2.5, 2.5])
  np.testing.assert_allclose(state.coarse_weights[:, 0], [2.0, 2 / 3], rtol=1e-6)
  with pytest.raises(errors.ConfigError, match="train_length"):
    haan.make_method(_config(train_length=8), CLASSES).init_state(_clips())


def test_refresh_labels_every_clip_from_the_sample_fit(trained_setup):
  method, clips, _, params, state, info = trained_setup
  table = np.asarray(state.pseudo_labels)
  assert table.shape == (4, 12)
  for v, n in enumerate(clips.lengths):
    assert np.all(table[v, :n] < 4) and np.all(table[v, n:] == 4)
  assert info["kmeans_sample_size"] == 33
  flat = np.concatenate([table[v, :n] for v, n in enumerate(clips.lengths)])
  counts = np.bincount(flat, minlength=4)
  np.testing.assert_allclose(state.cluster_weights, counts / counts.sum(), rtol=1e-6)
  # Deterministic given the key, and a different key draws another sample.
  again, _ = method.refresh(params, method.init_state(clips), clips, jax.random.key(1))
  np.testing.assert_array_equal(again.pseudo_labels, state.pseudo_labels)


def test_refresh_assigns_nearest_centroid_of_the_encodings(trained_setup):
  method, clips, _, params, state, _ = trained_setup
  encode = jax.jit(lambda p, x: method.model.apply({"params": p}, x, method=concepts.HaanNetwork.encode))
  encoded = np.asarray(encode(params, jnp.asarray(clips.features)))
  flat = np.concatenate([np.asarray(state.pseudo_labels)[v, :n] for v, n in enumerate(clips.lengths)])
  # With the whole split as the sample, the pseudo-labels are the k-means partition of the encodings: each clip's
  # label is the nearest of the cluster means.
  means = np.stack([encoded[flat == k].mean(0) for k in np.unique(flat)])
  nearest = np.argmin(((encoded[:, None] - means[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(np.unique(flat)[nearest], flat)


def test_cluster_sample_size():
  assert haan.cluster_sample_size(306478, 0.1, 500) == 30647  # FineGym at the official code's rate.
  assert haan.cluster_sample_size(1000, 0.1, 500) == 500  # At least one clip per concept.
  assert haan.cluster_sample_size(33, 0.5, 4) == 16


def test_batch_pseudo_labels_gather_by_video_index(trained_setup):
  method, _, batch, _, state, _ = trained_setup
  got = np.asarray(method.batch_pseudo_labels(state, batch))
  table = np.asarray(state.pseudo_labels)
  np.testing.assert_array_equal(got[0], table[1])
  np.testing.assert_array_equal(got[1, :7], table[0, :7])
  assert np.all(got[1, 7:] == 4) and np.all(got[3] == 4)  # Padding clips and the padding video are void.


def test_loss_terms_and_padding_videos(trained_setup):
  method, clips, batch, params, state, _ = trained_setup
  loss_fn = jax.jit(method.loss, static_argnums=3)
  loss, aux = loss_fn(params, batch, jax.random.key(0), 0, state)
  assert set(aux) == {"mil", "pseudo", "concept", "coarse", "pseudo_label_accuracy"}
  c = method.config
  total = sum(getattr(c, f"{name}_weight") * float(aux[name][0]) for name in ("mil", "pseudo", "concept", "coarse"))
  assert float(loss) == pytest.approx(total, rel=1e-5)
  assert float(aux["mil"][1]) == 3.0  # Three real videos.
  # A padding video's features change nothing (dropout is 0 in this config).
  changed = dict(batch, features=batch["features"].at[3].set(7.0))
  np.testing.assert_allclose(loss_fn(params, changed, jax.random.key(0), 0, state)[0], loss, rtol=1e-6)


def test_gradient_routing_prototypes_only_move_through_mil(trained_setup):
  method, _, batch, params, state, _ = trained_setup
  names = ("mil", "pseudo", "concept", "coarse")

  def terms(p):
    aux = method.loss(p, batch, jax.random.key(0), 0, state)[1]
    return jnp.stack([aux[name][0] for name in names])

  grads = jax.jit(jax.jacrev(terms))(params)  # Each leaf: [4, ...], one gradient per loss term.
  prototype = np.abs(np.asarray(grads["fine"]["out"]["kernel"])).reshape(4, -1).sum(1)
  features = np.abs(np.asarray(grads["fine"]["hidden"]["kernel"])).reshape(4, -1).sum(1)
  # Only L_mil moves the prototypes w; L_concept and L_coarse move the features x (S's hidden layer) instead.
  assert prototype[0] > 0 and prototype[2] == 0 and prototype[3] == 0
  assert features[2] > 0 and features[3] > 0
  # L_pseudo reaches the encoder but not S at all.
  assert prototype[1] == 0 and features[1] == 0
  assert np.abs(np.asarray(grads["encoder"]["out"]["kernel"][1])).sum() > 0


def test_loss_without_pseudo_labels_skips_the_hierarchy():
  method = haan.make_method(_config(pseudo_weight=0.0, concept_weight=0.0, coarse_weight=0.0), CLASSES)
  assert not method.uses_pseudo_labels and not method.refresh_due(0)
  clips = _clips()
  batch = _batch(clips)
  params = jax.jit(method.init)(jax.random.key(0), batch)
  _, aux = jax.jit(method.loss, static_argnums=3)(params, batch, jax.random.key(0), 0, method.init_state(clips))
  assert set(aux) == {"mil"}


def test_detect_runs_seconds_scores_and_absent_classes():
  # One video of 8 clips (2 padding), two classes; class 1 is absent (its top-3 mean is negative).
  s = np.zeros([1, 8, 2], np.float32)
  s[0, :6, 0] = [0.0, 3.0, 2.5, 0.0, 4.0, 1.0]
  s[0, :6, 1] = [-1.0, -2.0, 0.5, -3.0, -1.0, -2.0]
  s[0, 6:] = 9.0  # Padding must not count.
  mask = jnp.asarray(np.arange(8)[None] < 6)
  detect = jax.jit(functools.partial(haan.detect, top_divisor=2, alpha=0.1))
  out = jax.tree.map(np.asarray, detect(jnp.asarray(s), mask))
  # c_0 = mean of the ⌈6/2⌉ = 3 largest = (4 + 3 + 2.5) / 3; threshold = 10.5/6 + 0.1 * 4 = 2.15.
  c0 = 9.5 / 3
  np.testing.assert_allclose(out["video_scores"][0], [c0, (0.5 - 1.0 - 1.0) / 3], rtol=1e-6)
  starts = np.argwhere(out["segment_start"][0])
  np.testing.assert_array_equal(starts, [[1, 0], [4, 0]])  # Runs [1, 3) and [4, 5) of class 0 only.
  assert out["segment_end"][0, 1, 0] == 3 and out["segment_end"][0, 4, 0] == 5
  np.testing.assert_allclose(out["segment_score"][0, [1, 4], 0], [3.0 + 0.5 * c0, 4.0 + 0.5 * c0], rtol=1e-6)


def test_detect_alpha_negative_makes_one_segment_and_runs_touch_the_end():
  s = jnp.asarray(np.array([[[1.0], [2.0], [5.0], [3.0]]], np.float32))
  out = jax.jit(functools.partial(haan.detect, top_divisor=4, alpha=-0.8))(s, jnp.ones([1, 4], bool))
  assert np.argwhere(np.asarray(out["segment_start"][0])).tolist() == [[0, 0]]
  assert int(out["segment_end"][0, 0, 0]) == 4
  assert float(out["segment_score"][0, 0, 0]) == pytest.approx(5.0 + 0.5 * 5.0)


def _runs_reference(scores, mask, threshold):
  """Loop transcription of the official run extraction: per (video, class), maximal runs of clips above the
  threshold, as (start, end, max score)."""
  found = set()
  batch, clips, classes = scores.shape
  for b in range(batch):
    for c in range(classes):
      t = 0
      while t < clips:
        if mask[b, t] and scores[b, t, c] > threshold[b, c]:
          end = t
          while end < clips and mask[b, end] and scores[b, end, c] > threshold[b, c]:
            end += 1
          found.add((b, t, c, end, float(scores[b, t:end, c].max())))
          t = end
        else:
          t += 1
  return found


def test_detect_runs_match_a_loop_reference_on_random_scores():
  rng = np.random.default_rng(5)
  scores = rng.normal(size=[3, 40, 4]).astype(np.float32) + 0.3
  mask = np.arange(40)[None] < np.array([40, 23, 1])[:, None]
  out = jax.tree.map(np.asarray, haan.detect(jnp.asarray(scores), jnp.asarray(mask), top_divisor=2, alpha=0.1))
  present = out["video_scores"] > 0
  zeroed = np.where(present[:, None, :], scores, 0.0)
  valid = mask[:, :, None]
  length = mask.sum(1)[:, None]
  threshold = (np.where(valid, zeroed, 0).sum(1) / length
               + 0.1 * (np.where(valid, zeroed, -np.inf).max(1) - np.where(valid, zeroed, np.inf).min(1)))
  expected = _runs_reference(zeroed, mask, threshold)
  b, t, c = np.nonzero(out["segment_start"])
  got = {(int(i), int(j), int(k), int(out["segment_end"][i, j, k]),
          float(out["segment_score"][i, j, k] - 0.5 * out["video_scores"][i, k])) for i, j, k in zip(b, t, c)}
  assert len(expected) > 20
  assert {x[:4] for x in got} == {x[:4] for x in expected}
  got_max = {x[:4]: x[4] for x in got}
  for key, value in ((x[:4], x[4]) for x in expected):
    assert got_max[key] == pytest.approx(value, abs=1e-5)


def test_predict_and_postprocess(trained_setup):
  method, _, batch, params, _, _ = trained_setup
  outputs = jax.tree.map(np.asarray, jax.jit(method.predict)(params, batch))
  assert outputs["clip_logits"].shape == (4, 12, 5)
  results = method.postprocess(jax.tree.map(np.asarray, batch), outputs)
  assert results[3] is None and all(r is not None for r in results[:3])
  for row, result in enumerate(results[:3]):
    table = result["detections"]
    assert table.shape[1] == 4
    for label, score, start, end in table:
      assert outputs["segment_start"][row, int(start), int(label)]
      assert end == outputs["segment_end"][row, int(start), int(label)] and start < end
      assert score == pytest.approx(outputs["segment_score"][row, int(start), int(label)])


def test_from_dataset_packs_videos_and_labels():
  video = lambda n, labels: SimpleNamespace(features=np.full([n, 3], n, np.float32), labels=np.array(labels))
  dataset = SimpleNamespace(videos=[video(2, [1]), video(3, [0, 2, 0])], label_map=SimpleNamespace(num_classes=3),
                            fine_to_coarse={0: 0, 1: 1, 2: 1})
  clips = haan.TrainingClips.from_dataset(dataset)
  assert clips.features.shape == (5, 3) and clips.features[2, 0] == 3
  np.testing.assert_array_equal(clips.lengths, [2, 3])
  np.testing.assert_array_equal(clips.offsets, [0, 2, 5])
  np.testing.assert_array_equal(clips.video_labels, [[0, 1, 0], [1, 0, 1]])
  np.testing.assert_array_equal(clips.fine_to_coarse, [0, 1, 1])


def test_presets_and_variants():
  for name in ("synthetic", "test", "finegym", "fineaction"):
    config = CONFIGS.get_config(name)
    haan.make_method(config, CLASSES)
    assert config.method == "hal_jax.methods.haan" and config.learning_rate > 0
  gym, action = CONFIGS.get_config("finegym"), CONFIGS.get_config("fineaction")
  assert (gym.coarse_weight, gym.coarse_pooling, gym.detection_alpha, gym.video_top_divisor) == (0.1, "mean", 0.1, 2)
  assert (action.coarse_weight, action.coarse_pooling, action.detection_alpha) == (1.0, "max", -0.8)
  assert gym.tiou_thresholds == "0.1:0.5:0.05" and action.tiou_thresholds == "0.5:0.95:0.05"
  assert gym.num_epochs == 200 and gym.learning_rate == 3e-5
  method = haan.make_method(gym, CLASSES)  # A constant learning rate:
  assert float(method.learning_rate(0)) == float(method.learning_rate(gym.num_epochs - 1)) == np.float32(3e-5)
  assert CONFIGS.get_config("finegym,variant=mil").pseudo_weight == 0.0
  assert CONFIGS.get_config("fineaction,variant=euclidean").concept_distance == "euclidean"
  assert CONFIGS.get_config("finegym,variant=paper_lambda").coarse_weight == 1.0
  with pytest.raises(ValueError, match="unknown variant"):
    CONFIGS.get_config("finegym,variant=gmm")
  bad = _config()
  with bad.unlocked():
    bad.coarse_pooling = "sum"
  with pytest.raises(errors.ConfigError, match="coarse_pooling"):
    haan.make_method(bad, CLASSES)
