"""Tests of hal_jax.models.concepts: HAAN's network, visual concepts, composition and k-means on device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax.models import concepts

C, N, H, D, T, B = 5, 6, 8, 7, 9, 2


def test_block_shapes_and_pytorch_init_bounds():
  block = concepts.Block(hidden_dim=32, out_dim=3, dropout_rate=0.5)
  x = jnp.ones([4, 10])
  params = jax.jit(block.init)(jax.random.key(0), x)["params"]
  apply = jax.jit(lambda p, x, key: (block.apply({"params": p}, x),
                                     block.apply({"params": p}, x, False, rngs={"dropout": key})))
  (hidden, out), (train_hidden, train_out) = apply(params, x, jax.random.key(1))
  assert hidden.shape == (4, 32) and out.shape == (4, 3)
  assert np.all(np.asarray(hidden) >= 0)  # After the ReLU.
  # PyTorch's nn.Linear default: weights and biases in ±1/sqrt(fan_in).
  assert np.abs(params["hidden"]["kernel"]).max() <= 1 / np.sqrt(10)
  assert np.abs(params["out"]["bias"]).max() <= 1 / np.sqrt(32)
  # Dropout only in training mode, and then it zeroes part of the hidden layer.
  assert not np.allclose(train_out, out)
  assert np.any(np.asarray(train_hidden) == 0) and np.any(np.asarray(hidden) > 0)


def _apply(model, params, *args, **kwargs):
  return jax.jit(lambda p, *a: model.apply({"params": p}, *a, **kwargs))(params, *args)


@pytest.fixture(scope="module")
def network():
  """A small network, its parameters, inputs (video 1 padded after clip 6) and full outputs, built once."""
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=[B, T, D]), jnp.float32)
  labels = rng.integers(0, N, size=[B, T]).astype(np.int32)
  labels[1, 6:] = N  # Padding clips of the second video.
  labels, membership = jnp.asarray(labels), jnp.asarray(concepts.membership_matrix([0, 0, 1, 1, 1]))
  model = concepts.HaanNetwork(num_classes=C, num_concepts=N, hidden_dim=H, dropout_rate=0.0, top_k=2)
  params = jax.jit(model.init)(jax.random.key(0), features, labels, membership)["params"]
  return model, params, (features, labels, membership), _apply(model, params, features, labels, membership)


def test_network_shapes_and_prototypes(network):
  model, params, (features, _, _), out = network
  assert set(params) == {"encoder", "fine", "concept", "coarse"}
  assert out.encoded.shape == (B, T, H) and out.clip_features.shape == (B, T, H)
  assert out.clip_logits.shape == (B, T, C) and out.concept_logits.shape == (B, T, N)
  assert out.fine_concepts.shape == (B, C, H) and out.coarse_logits.shape == (B, 2)
  np.testing.assert_array_equal(out.prototypes, params["fine"]["out"]["kernel"].T)
  # s = w x + b with w the prototypes.
  np.testing.assert_allclose(out.clip_logits, out.clip_features @ out.prototypes.T + params["fine"]["out"]["bias"],
                             rtol=1e-5, atol=1e-5)
  bare = _apply(model, params, features)
  assert bare.fine_concepts is None and bare.coarse_logits is None
  np.testing.assert_allclose(bare.clip_logits, out.clip_logits, rtol=1e-6)
  np.testing.assert_allclose(_apply(model, params, features, method=concepts.HaanNetwork.encode), out.encoded,
                             rtol=1e-6)


def test_padding_clips_do_not_change_the_hierarchy(network):
  model, params, (features, labels, membership), out = network
  changed = features.at[1, 6:].set(100.0)  # Padding clips (label N) of video 1 get other features.
  again = _apply(model, params, changed, labels, membership)
  np.testing.assert_allclose(again.fine_concepts, out.fine_concepts, rtol=1e-6)
  np.testing.assert_allclose(again.coarse_logits, out.coarse_logits, rtol=1e-6)
  assert not np.allclose(again.clip_logits[1, 6:], out.clip_logits[1, 6:])


def test_visual_concepts_are_cluster_means_and_zero_when_absent():
  x = jnp.arange(12, dtype=jnp.float32).reshape(6, 2)
  labels = jnp.array([0, 2, 0, 2, 2, 4])  # 4 = void with N = 4.
  v = concepts.visual_concepts(x, labels, 4)
  np.testing.assert_allclose(v[0], (x[0] + x[2]) / 2)
  np.testing.assert_allclose(v[2], (x[1] + x[3] + x[4]) / 3)
  np.testing.assert_array_equal(v[1], 0.0)
  np.testing.assert_array_equal(v[3], 0.0)  # Only the void clip: not pooled anywhere.


def test_cosine_similarity_matches_pytorch_definition_and_is_safe_at_zero():
  a = jnp.array([[1.0, 2.0], [0.0, 0.0]])
  b = jnp.array([[2.0, -1.0], [3.0, 4.0]])
  expected = [0.0, 0.0]
  np.testing.assert_allclose(concepts.cosine_similarity(a, b), expected, atol=1e-7)
  np.testing.assert_allclose(concepts.cosine_similarity(a[:1], jnp.array([[2.0, 4.0]])), [1.0], rtol=1e-6)
  grad = jax.grad(lambda z: concepts.cosine_similarity(z, b[1]))(jnp.zeros(2))
  assert np.all(np.isfinite(grad))
  grad = jax.grad(lambda z: concepts.euclidean_distance(z, z))(jnp.ones(2))
  np.testing.assert_array_equal(grad, 0.0)


def test_compose_fine_takes_the_top_k_nearest_concepts():
  prototypes = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  v = jnp.array([[1.0, 0.1], [2.0, -0.1], [0.0, 3.0], [-1.0, 0.0]])
  e = concepts.compose_fine(prototypes, v, 2)
  np.testing.assert_allclose(e[0], (v[0] + v[1]) / 2)
  # Class 1: v2 (cos 1) then v0 (cos 0.0995) beats v1 and v3.
  np.testing.assert_allclose(e[1], (v[2] + v[0]) / 2)
  # Euclidean, class 0: squared distances 0.01 (v0), 1.01 (v1), 10 (v2), 4 (v3).
  e = concepts.compose_fine(prototypes, v, 2, concepts.EUCLIDEAN)
  np.testing.assert_allclose(e[0], (v[0] + v[1]) / 2)


def test_zero_concept_is_selectable_when_all_others_point_away():
  prototypes = jnp.array([[1.0, 0.0]])
  v = jnp.array([[-1.0, 0.0], [0.0, 0.0], [-2.0, 1.0]])  # Similarities -1, 0 (absent concept), -0.89.
  e = concepts.compose_fine(prototypes, v, 1)
  np.testing.assert_array_equal(e[0], 0.0)


def test_compose_fine_gradients_go_to_concepts_only():
  prototypes = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  v = jnp.array([[1.0, 0.1], [2.0, -0.1], [0.0, 3.0]])
  grad_w, grad_v = jax.grad(lambda w, v: jnp.sum(concepts.compose_fine(w, v, 2)), argnums=(0, 1))(prototypes, v)
  np.testing.assert_array_equal(grad_w, 0.0)
  # Concept 0 is selected by both classes, 1 by class 0 and 2 by class 1: each selection adds 1/k per entry.
  np.testing.assert_allclose(grad_v, [[1.0, 1.0], [0.5, 0.5], [0.5, 0.5]])


def test_compose_coarse_max_and_mean():
  e = jnp.array([[1.0, 5.0], [3.0, -1.0], [2.0, 2.0]])
  membership = jnp.asarray(concepts.membership_matrix([0, 0, 1]))
  np.testing.assert_array_equal(concepts.compose_coarse(e, membership, concepts.MAX), [[3.0, 5.0], [2.0, 2.0]])
  np.testing.assert_array_equal(concepts.compose_coarse(e, membership, concepts.MEAN), [[2.0, 2.0], [2.0, 2.0]])
  with pytest.raises(ValueError, match="coarse pooling"):
    concepts.compose_coarse(e, membership, "sum")


def test_membership_matrix():
  np.testing.assert_array_equal(concepts.membership_matrix([1, 0, 1]), [[0, 1, 0], [1, 0, 1]])


def _blobs(seed=0, per=40, k=4, dim=5, spread=0.05):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=[k, dim]) * 10
  truth = np.repeat(np.arange(k), per)
  points = centres[truth] + spread * rng.normal(size=[k * per, dim])
  order = rng.permutation(len(points))
  return jnp.asarray(points[order], jnp.float32), truth[order], centres


def _same_partition(a, b):
  """True when labelings a and b agree up to a renaming of the clusters."""
  pairs = set(zip(np.asarray(a).tolist(), np.asarray(b).tolist()))
  return len(pairs) == len(set(np.asarray(a).tolist())) == len(set(np.asarray(b).tolist()))


def test_kmeans_recovers_separated_blobs():
  x, truth, centres = _blobs()
  fit = concepts.kmeans_fit(jax.random.key(0), x, 4, restarts=2)
  labels, distances = concepts.kmeans_assign(x, fit.centroids, block_size=64)
  assert _same_partition(labels, truth)
  # Each centroid sits at its blob's centre.
  nearest = np.argmin(((np.asarray(fit.centroids)[:, None] - centres[None]) ** 2).sum(-1), axis=1)
  assert sorted(nearest.tolist()) == [0, 1, 2, 3]
  np.testing.assert_allclose(fit.centroids, centres[nearest], atol=0.05)
  np.testing.assert_allclose(fit.inertia, np.sum(distances), rtol=1e-4)
  assert fit.restart_inertia.shape == (2,) and float(fit.inertia) == float(np.min(fit.restart_inertia))


def test_kmeans_is_deterministic_given_the_key():
  x, _, _ = _blobs(seed=1, spread=8.0)  # Overlapping blobs (same shapes as above: no new compile).
  a = concepts.kmeans_fit(jax.random.key(3), x, 4, restarts=2)
  b = concepts.kmeans_fit(jax.random.key(3), x, 4, restarts=2)
  np.testing.assert_array_equal(a.centroids, b.centroids)
  c = concepts.kmeans_fit(jax.random.key(4), x, 4, restarts=2)
  assert not np.array_equal(a.centroids, c.centroids)


@pytest.mark.parametrize("sketch_dim", [0, 3])
def test_kmeans_plusplus_picks_one_seed_per_blob(sketch_dim):
  x, truth, _ = _blobs(k=5, per=20)
  seeds = jax.jit(concepts.kmeans_plusplus, static_argnums=(2, 3, 4))(jax.random.key(0), x, 5, None, sketch_dim)
  assert sorted(truth[np.asarray(seeds)].tolist()) == [0, 1, 2, 3, 4]


def test_lloyd_inertia_decreases_monotonically():
  x, _, _ = _blobs(seed=2, k=5, spread=4.0)
  centroids = x[:5]
  inertia = []
  lloyd = jax.jit(concepts.lloyd)  # One compile: the iteration cap is a traced value.
  for iterations in range(1, 6):
    _, value, ran = lloyd(x, centroids, iterations, 0.0)
    inertia.append(float(value))
    assert int(ran) <= iterations
  assert all(b <= a + 1e-3 for a, b in zip(inertia, inertia[1:]))
  assert inertia[-1] < inertia[0]


def test_lloyd_reseeds_empty_clusters_with_the_farthest_points():
  x = jnp.array([[0.0], [0.1], [10.0], [10.2]])
  # Centre 2 starts far from every point: it would stay empty without relocation.
  centroids, inertia, _ = jax.jit(concepts.lloyd)(x, jnp.array([[0.05], [10.1], [1000.0]]), 1, 0.0)
  assert float(jnp.min(jnp.abs(centroids[2] - x[:, 0]))) == 0.0
  assert np.isfinite(float(inertia))


def test_kmeans_assign_blocks_match_a_direct_argmin():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=[37, 3]), jnp.float32)
  centroids = jnp.asarray(rng.normal(size=[5, 3]), jnp.float32)
  labels, distances = concepts.kmeans_assign(x, centroids, block_size=8)
  direct = ((np.asarray(x)[:, None] - np.asarray(centroids)[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(labels, direct.argmin(1))
  np.testing.assert_allclose(distances, direct.min(1), rtol=1e-4, atol=1e-5)


def test_kmeans_rejects_fewer_points_than_clusters():
  with pytest.raises(ValueError, match="at least as many points"):
    concepts.kmeans_fit(jax.random.key(0), jnp.zeros([3, 2]), 4, restarts=1)
