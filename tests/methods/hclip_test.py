"""H-CLIP's network, losses and inference (spec hclip.md §9): shapes, masks, zero-init, filter, L_hc, permutations."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hclip as hclip_config
from hal_jax.data import recognition_formats as rf
from hal_jax.methods import hclip

B, T, D, E = 4, 6, 10, 8


def _taxonomy(text: bool = True, levels: int = 2) -> rf.Taxonomy:
  if levels == 2:
    classes = (("A", "B"), ("a1", "a2", "b1"))
    parents = (np.zeros([0], np.int32), np.array([0, 0, 1], np.int32))
  else:
    classes = (("A", "B"), ("a", "b", "c"), ("a1", "a2", "b1", "c1", "c2"))
    parents = (np.zeros([0], np.int32), np.array([0, 1, 1], np.int32), np.array([0, 0, 1, 2, 2], np.int32))
  rng = np.random.default_rng(0)
  texts = tuple(rng.standard_normal([len(c), E]).astype(np.float32) for c in classes) if text else None
  return rf.Taxonomy(tuple(f"l{i}" for i in range(levels)), classes, parents, text=texts)


def _method(taxonomy=None, **overrides) -> hclip.HClip:
  config = hclip_config.get_config("test")
  with config.unlocked():
    config.update(dict(hidden_dim=16, mlp_dim=32, num_heads=2, num_layers=2, embed_dim=E, dropout=0.0))
    config.update(overrides)
  return hclip.make_method(config, (taxonomy or _taxonomy()).names)


def _batch(taxonomy=None, seed=0) -> dict:
  taxonomy = taxonomy or _taxonomy()
  rng = np.random.default_rng(seed)
  frames = np.array([T, 3, 1, 5])
  leaves = rng.integers(taxonomy.sizes[-1], size=B)
  return {"features": rng.standard_normal([B, T, D]).astype(np.float32),
          "frame_mask": np.arange(T)[None, :] < frames[:, None],
          "labels": taxonomy.ancestors()[leaves].astype(np.int32),
          "batch_mask": np.ones([B], bool), "video_index": np.arange(B, dtype=np.int32)}


def _loss(method, params, batch):
  """The training loss (jitted: op-by-op execution would dominate the test time)."""
  return jax.jit(lambda p, b: method.loss(p, b, jax.random.key(1), 0))(params, batch)


def _logits(method, params, batch):
  return jax.jit(method.logits)(params, batch)


def _perturbed(params, seed=1):
  """Every parameter moved off its initial value (so zero-initialised blocks take part); NumPy draws."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(np.shape(p)).astype(np.float32), params)


_INIT_CACHE = {}


def _init(method, batch):
  """method.init, jitted and remembered per network (initialisation compiles a random draw per parameter)."""
  key = (repr(method.network), method.taxonomy.sizes)
  if key not in _INIT_CACHE:
    _INIT_CACHE[key] = jax.jit(method.init)(jax.random.key(0), batch)
  return _INIT_CACHE[key]


@pytest.mark.parametrize("levels, text", [(2, True), (3, True), (2, False)])
def test_shapes_and_consistent_filtered_paths(levels, text):
  taxonomy = _taxonomy(text, levels)
  method = _method(taxonomy)
  batch = _batch(taxonomy)
  params = _perturbed(_init(method, batch))
  assert ("class_embedding_l1" in params) == (not text)
  out = jax.jit(method.predict)(params, batch)
  for level, size in enumerate(taxonomy.sizes, 1):
    assert out[f"log_probs_l{level}"].shape == (B, size)
  for kind in ("filtered", "flat", "joint"):
    assert out[kind].shape == (B, levels) and out[kind].dtype == jnp.int32
  assert taxonomy.consistent(np.asarray(out["filtered"])).all()
  assert taxonomy.consistent(np.asarray(out["joint"])).all()
  loss, aux = _loss(method, params, batch)
  assert np.isfinite(loss) and set(aux) == {f"ce_l{l}" for l in range(1, levels + 1)} | {
      f"hc_l{l}" for l in range(2, levels + 1)}


def test_padding_frames_and_masked_clips_change_nothing():
  method = _method()
  batch = _batch()
  params = _perturbed(_init(method, batch))
  loss, _ = _loss(method, params, batch)
  out = jax.jit(method.predict)(params, batch)
  noisy = dict(batch, features=np.where(batch["frame_mask"][..., None], batch["features"], 1e3))
  padded = {k: np.concatenate([v, v[:2]]) for k, v in noisy.items()}
  padded["batch_mask"] = np.arange(B + 2) < B
  padded["features"][B:] = -7.0  # Masked clips with other content and labels.
  padded["labels"][B:] = -1
  loss_padded, _ = _loss(method, params, padded)
  out_padded = jax.jit(method.predict)(params, padded)
  np.testing.assert_allclose(loss_padded, loss, rtol=1e-5)
  for key, value in out.items():
    np.testing.assert_allclose(np.asarray(out_padded[key])[:B], value, rtol=1e-5, atol=1e-5)


def test_zero_initialised_units_and_maps_equal_the_flat_model():
  full, flat = _method(), _method(use_units=False, use_text_conditioning=False)
  batch = _batch()
  params = _init(full, batch)
  assert {"f2c_l1", "c2f_l2", "text_condition_l2"} <= set(params)
  flat_params = {k: v for k, v in params.items() if k not in ("f2c_l1", "c2f_l2", "text_condition_l2")}
  assert jax.tree.structure(flat_params) == jax.tree.structure(_init(flat, batch))
  for a, b in zip(_logits(full, params, batch), _logits(flat, flat_params, batch)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)  # Equal up to XLA's fusion order.
  # Trained (moved) units make a difference: the test above is not vacuous.
  moved = _perturbed(params)
  assert not np.allclose(_logits(full, moved, batch)[1], _logits(flat, {k: moved[k] for k in flat_params}, batch)[1])


def test_gradients_reach_every_block_and_are_finite():
  method = _method()
  batch = _batch()
  params = _init(method, batch)
  grads = jax.jit(jax.grad(lambda p: method.loss(p, batch, jax.random.key(1), 0)[0]))(params)
  norms = {jax.tree_util.keystr(path): float(jnp.linalg.norm(g))
           for path, g in jax.tree_util.tree_leaves_with_path(grads)}
  assert all(np.isfinite(v) for v in norms.values())
  # Behind a zero-initialised output layer the unit's hidden layer gets no gradient at step 0; everything else does.
  silent = {k for k, v in norms.items() if v == 0.0}
  assert silent and all("'hidden'" in k for k in silent), silent
  for name in ("'out'", "text_adapter_l1", "text_condition_l2", "log_logit_scale", "position_embedding", "head_l2"):
    assert any(name in k and v > 0 for k, v in norms.items()), name


def test_top_down_filter_on_a_hand_made_example():
  parents = (np.zeros([0], np.int32), np.array([0, 0, 1]))
  p1 = jnp.log(jnp.array([[0.6, 0.4], [0.6, 0.4]]))
  p2 = jnp.log(jnp.array([[0.1, 0.2, 0.7], [0.5, 0.2, 0.3]]))
  filtered = hclip.top_down([p1, p2], parents)
  flat = jnp.argmax(p2, axis=-1)
  # Row 0: flat picks b1 (under B) while level 1 says A: the filter picks A's best child a2. Row 1: flat a1 agrees.
  np.testing.assert_array_equal(filtered, [[0, 1], [0, 0]])
  np.testing.assert_array_equal(flat, [2, 0])
  # Joint path: A,a2 = 0.12 and B,b1 = 0.28 (row 0); A,a1 = 0.30 (row 1).
  ancestors = np.array([[0, 0], [0, 1], [1, 2]])
  np.testing.assert_array_equal(hclip.joint_path([p1, p2], ancestors), [[1, 2], [0, 0]])


def test_consistency_loss_on_a_hand_made_example():
  parents = np.array([0, 0, 1])
  log_p2 = jnp.log(jnp.array([[0.1, 0.2, 0.7], [0.1, 0.2, 0.7], [0.5, 0.5, 0.0]]))
  loss = hclip.consistency_loss(log_p2, parents, jnp.array([0, 1, 0]))
  np.testing.assert_allclose(loss, [-np.log(0.3), -np.log(0.7), 0.0], rtol=1e-6, atol=1e-7)


def test_permuting_class_texts_permutes_logits():
  taxonomy = _taxonomy()
  method = _method(taxonomy)
  batch = _batch(taxonomy)
  params = _perturbed(_init(method, batch))
  logits = _logits(method, params, batch)
  # Level 2: permute its texts and parent map. Level 1: permute its texts and relabel level 2's parents.
  perm2, perm1 = np.array([2, 0, 1]), np.array([1, 0])
  texts = (taxonomy.text[0], taxonomy.text[1][perm2])
  parents = (taxonomy.parents[0], taxonomy.parents[1][perm2])
  permuted = dataclasses.replace(taxonomy, text=texts, parents=parents)
  out = _logits(_method(permuted), params, batch)
  np.testing.assert_allclose(out[1], logits[1][:, perm2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out[0], logits[0], rtol=1e-5, atol=1e-6)
  inverse = np.argsort(perm1)
  permuted = dataclasses.replace(taxonomy, text=(taxonomy.text[0][perm1], taxonomy.text[1]),
                                 parents=(taxonomy.parents[0], inverse[taxonomy.parents[1]].astype(np.int32)))
  out = _logits(_method(permuted), params, batch)
  np.testing.assert_allclose(out[0], logits[0][:, perm1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out[1], logits[1], rtol=1e-5, atol=1e-6)


def test_new_classes_enter_through_new_texts():
  taxonomy = _taxonomy()
  method = _method(taxonomy)
  batch = _batch(taxonomy)
  params = _perturbed(_init(method, batch))
  extra = np.random.default_rng(5).standard_normal([1, E]).astype(np.float32)
  grown = rf.Taxonomy(taxonomy.level_names, (taxonomy.classes[0], taxonomy.classes[1] + ("b2",)),
                      (taxonomy.parents[0], np.array([0, 0, 1, 1], np.int32)),
                      text=(taxonomy.text[0], np.concatenate([taxonomy.text[1], extra])))
  out = _logits(_method(grown), params, batch)  # Same parameters, one more leaf.
  np.testing.assert_allclose(out[1][:, :3], _logits(method, params, batch)[1], rtol=1e-5, atol=1e-6)
  assert out[1].shape == (B, 4)


def test_logit_scale_is_capped():
  method = _method()
  batch = _batch()
  params = _init(method, batch)
  np.testing.assert_allclose(params["log_logit_scale"], np.log(1 / 0.07), rtol=1e-6)
  params = dict(params, log_logit_scale=jnp.asarray(np.log(1e4), jnp.float32))
  for logits in _logits(method, _perturbed(params, 2) | {"log_logit_scale": params["log_logit_scale"]}, batch):
    assert float(jnp.max(jnp.abs(logits))) <= 100.0 + 1e-3


def test_hierarchy_data_is_required():
  config = hclip_config.get_config("test")
  with pytest.raises(Exception, match="needs recognition data"):
    hclip.make_method(config, ("a", "b"))


def test_config_argument_follows_the_shared_grammar():
  """configs/hclip.py reads `preset[,variant=NAME]` through hal_jax.config_args; errors name the file."""
  default = hclip_config.get_config()
  assert (default.preset, default.variant, default.use_units) == ("synthetic", "full", True)
  flat = hclip_config.get_config("fma,variant=flat")
  assert (flat.preset, flat.use_units, flat.use_text_conditioning) == ("fma", False, False)
  assert hclip_config.get_config("test,variant=no_hc").hc_weight == 0.0
  assert hclip_config.get_config("finegym_elements").selection_metric == "acc_l3"  # Three levels.
  with pytest.raises(ValueError, match=r"^unknown preset 'nope' for configs/hclip.py; choose one of .*'fma'"):
    hclip_config.get_config("nope")
  with pytest.raises(ValueError, match=r"^unknown variant 'x' for configs/hclip.py; choose one of .*'no_hc'"):
    hclip_config.get_config("test,variant=x")


def test_warmup_is_linear_over_the_steps_of_the_first_epoch_then_cosine():
  """Spec §5: the rate rises from 0 within epoch 0 (the loop passes the fractional epoch: tests/train_test.py)."""
  method = _method(learning_rate=1.0, warmup_epochs=1, num_epochs=5, final_lr_factor=0.0)
  assert method.per_step_schedule
  for epoch, expected in ((0.0, 0.0), (0.25, 0.25), (0.75, 0.75), (1.0, 1.0), (3.0, 0.5), (5.0, 0.0)):
    assert float(method.learning_rate(epoch)) == pytest.approx(expected, abs=1e-6), epoch
  # The epoch-level schedule (RESULTS.md's runs): epoch 0 at 1% of the rate, whatever the step.
  epoch_level = _method(learning_rate=1.0, warmup_epochs=1, num_epochs=5, warmup_per_step=False)
  assert not epoch_level.per_step_schedule
  assert float(epoch_level.learning_rate(0)) == pytest.approx(0.01)


def test_weight_decay_spares_biases_norms_position_embedding_and_logit_scale():
  """Spec §5: AdamW's decay applies to the weight matrices and class embeddings only."""
  from hal_jax import optim  # pylint: disable=g-import-not-at-top
  method = _method(_taxonomy(text=False))
  mask = optim.decay_mask(method.config.weight_decay_exempt)(_init(method, _batch()))
  decayed = {jax.tree_util.keystr(path): bool(m) for path, m in jax.tree_util.tree_leaves_with_path(mask)}
  spared = {path for path, m in decayed.items() if not m}
  assert all(path.endswith(("['bias']", "['scale']")) for path in spared - {
      "['encoder']['position_embedding']", "['log_logit_scale']"})
  assert {"['encoder']['position_embedding']", "['log_logit_scale']"} <= spared
  assert any("norm" in path for path in spared)
  assert all(m for path, m in decayed.items() if path.endswith("['kernel']") or "class_embedding" in path)
