"""Tests for hal_jax.models.banded_attention: equality with ATBA's dense masked attention, dropout, linear memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hal_jax.models import banded_attention as banded


def atba_dense_mask(num_class: int, frame_mask: np.ndarray, radius: int) -> np.ndarray:
  """ATBA's full [B, C+T, C+T] attention mask, built literally from spec hal_atba.md §4.3 (padded rows opened)."""
  batch, frames = frame_mask.shape
  n = num_class + frames
  is_class = np.arange(n) < num_class
  time = np.arange(n) - num_class
  mask = np.zeros((batch, n, n), bool)
  for b in range(batch):
    valid = np.concatenate([np.ones(num_class, bool), frame_mask[b]])
    for i in range(n):
      for j in range(n):
        both_frames = not is_class[i] and not is_class[j]
        padded_query = not is_class[i] and not valid[i]
        mask[b, i, j] = valid[j] and (
            is_class[i] or is_class[j] or (both_frames and abs(time[i] - time[j]) <= radius) or padded_query)
  return mask


def dense_reference(query, key, value, mask):
  """Plain softmax attention. query/key/value: [B, N, H, dh]; mask: [B, N, N]. Returns [B, N, H, dh]."""
  logits = jnp.einsum("bihd,bjhd->bhij", query, key) / np.sqrt(query.shape[-1])
  probs = jax.nn.softmax(jnp.where(mask[:, None], logits, -jnp.inf), axis=-1)
  return jnp.einsum("bhij,bjhd->bihd", probs, value)


def random_qkv(seed, batch, tokens, heads, head_dim):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.normal(size=(batch, tokens, heads, head_dim)), jnp.float32) for _ in range(3))


NUM_CLASS, FRAMES = 3, 37


def joined_attention(query, key, value, frame_mask, **kwargs):
  """`banded_attention` on [B, C + T, H, dh] tokens (class tokens first, queries unscaled), the dense reference's
  layout."""
  num_class = query.shape[1] - frame_mask.shape[1]
  query = query * query.shape[-1] ** -0.5
  split = lambda x: (x[:, :num_class], x[:, num_class:])
  (cq, q), (ck, k), (cv, v) = split(query), split(key), split(value)
  return jnp.concatenate(banded.banded_attention(cq, ck, cv, q, k, v, frame_mask, **kwargs), axis=1)


# Jitted because op-by-op dispatch is slower than compiling once per configuration.
attention = jax.jit(joined_attention, static_argnames=("radius", "dropout_rate", "min_block_size"))
LENGTHS = np.array([37, 20, 1])  # A full video, a padded one and a single-frame one.


@pytest.mark.parametrize("radius", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("min_block_size", [1, 8])
def test_matches_atba_dense_mask_on_valid_rows(radius, min_block_size):
  # radius 1..16 runs the blocked path (with a ragged last block), 32 the dense one (2r+1 >= T).
  frame_mask = np.arange(FRAMES)[None] < LENGTHS[:, None]
  query, key, value = random_qkv(0, len(LENGTHS), NUM_CLASS + FRAMES, 2, 4)
  with jax.default_matmul_precision("highest"):
    got = attention(query, key, value, jnp.asarray(frame_mask), radius=radius, min_block_size=min_block_size)
    want = dense_reference(query, key, value, atba_dense_mask(NUM_CLASS, frame_mask, radius))
  valid_rows = np.concatenate([np.ones((len(LENGTHS), NUM_CLASS), bool), frame_mask], axis=1)
  assert got.shape == want.shape
  np.testing.assert_allclose(np.asarray(got)[valid_rows], np.asarray(want)[valid_rows], atol=1e-5, rtol=1e-5)
  # Padded frame rows differ from ATBA's opened rows by design, but must be finite.
  assert np.all(np.isfinite(np.asarray(got)))


def test_padded_keys_are_ignored_even_when_huge():
  frame_mask = np.arange(FRAMES)[None] < LENGTHS[:, None]
  query, key, value = random_qkv(1, len(LENGTHS), NUM_CLASS + FRAMES, 1, 8)
  padded_tokens = np.concatenate([np.zeros((len(LENGTHS), NUM_CLASS), bool), ~frame_mask], axis=1)
  noise = jnp.where(padded_tokens[:, :, None, None], 1e6, 0.0)
  valid_rows = ~padded_tokens
  for radius in (2, 32):
    clean = attention(query, key, value, jnp.asarray(frame_mask), radius=radius)
    noisy = attention(query, key + noise, value + noise, jnp.asarray(frame_mask), radius=radius)
    np.testing.assert_array_equal(np.asarray(noisy)[valid_rows], np.asarray(clean)[valid_rows])


def test_dropout_is_deterministic_given_the_rng():
  frame_mask = jnp.asarray(np.arange(FRAMES)[None] < LENGTHS[:, None])
  query, key, value = random_qkv(2, len(LENGTHS), NUM_CLASS + FRAMES, 1, 8)
  run = lambda rng, rate=0.5: attention(
      query, key, value, frame_mask, radius=4, dropout_rate=rate, dropout_rng=rng)
  first, again, other = run(jax.random.key(0)), run(jax.random.key(0)), run(jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
  assert not np.allclose(np.asarray(first), np.asarray(other))
  np.testing.assert_array_equal(np.asarray(run(None)), np.asarray(run(jax.random.key(0), rate=0.0)))
  assert not np.allclose(np.asarray(first), np.asarray(run(None)))


def test_needs_a_class_token():
  query, key, value = random_qkv(3, 1, 5, 1, 4)
  with pytest.raises(ValueError, match="class token"):
    joined_attention(query, key, value, jnp.ones((1, 5), bool), radius=1)


def test_block_size_covers_the_radius():
  assert banded.block_size(radius=16, num_frames=1000, min_block_size=8) == 16
  assert banded.block_size(radius=1, num_frames=1000, min_block_size=8) == 8
  assert banded.block_size(radius=16, num_frames=10, min_block_size=8) == 10


def _temp_bytes(frames: int, radius: int) -> int:
  num_class, heads, head_dim = 4, 1, 16
  shape = jax.ShapeDtypeStruct((1, num_class + frames, heads, head_dim), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, frames), jnp.bool_)
  fn = jax.jit(lambda q, k, v, m: joined_attention(q, k, v, m, radius=radius))
  return fn.lower(shape, shape, shape, mask).compile().memory_analysis().temp_size_in_bytes


def test_memory_grows_linearly_in_frames():
  for radius in (1, 16):
    small, large = _temp_bytes(512, radius), _temp_bytes(2048, radius)
    # 4x the frames: linear memory gives ~4x, a T x T buffer ~16x.
    assert large < 6 * small, (radius, small, large)
    # And far below a single float32 T x T score matrix (16 MiB at T=2048).
    assert large < 2048 * 2048 * 4 / 4, (radius, large)
