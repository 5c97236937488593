"""The hierarchical causal process behind the synthetic data sets (HAL's generative model, spec hal_atba.md §7.1).

A video is a sequence of segments k = (state a_k, start s_k, end e_k) over frames t = 0..T-1 (a state is an action
class, or background). Its latents and features are drawn as

  action latent (slow)  c_t = p_{a_k} + σ_i ε_k + δ (τ_t - 1/2) u_{a_k}                          for t in [s_k, e_k)
  visual latent (fast)  v_t = Σ_{l=1..L} B_l v_{t-l} + (I - Σ_l B_l) (W c_t + o + b_t) + σ_v η_t
  observation           x_t = g(v_t) + σ_x ξ_t

* p_a: [da] prototype of state a; ε_k ~ N(0, I) makes every instance of an action a little different.
* Pseudo-states: τ_t = (t - s_k) / max(e_k - s_k - 1, 1) is the progress through the segment and u_a a unit
  direction per state, so inside a segment c_{t+1} = c_t + δ u_a / (e_k - s_k - 1). This transition is
  deterministic: the action latent is constant within a segment up to this known straight-line drift, and jumps
  only at segment boundaries.
* v has the time-delayed parents v_{t-1..t-L} and the hierarchical parent c_t. B_l = a_l O_l with O_l random
  orthogonal and Σ_l a_l = ar_strength < 1, so the VAR is stable and I - Σ B_l is invertible. The drive is
  multiplied by (I - Σ B_l) so that under a constant c the stationary mean of v is exactly W c + o: the dynamics
  shape the fluctuations, not the class means.
* o ~ N(0, σ_o² I) is a per-video style (actor, camera, kitchen).
* b_t are visual bursts: offsets ~ N(0, σ_b² I), constant on short random intervals strictly inside segments. They
  stand for lighting changes and occlusions: the visual latent moves, the action latent does not, and a frame-wise
  classifier over-segments.
* g is an invertible mixing network: h_0 = sqrt(D/dv) v Q_0 (Q_0: [dv, D] with orthonormal rows), then per layer
  h_k = γ leaky_relu(h_{k-1} + β_k) O_k (O_k: [D, D] orthogonal, slope α, γ = sqrt(2 / (1 + α²)) keeps the scale).
  Every layer is a bijection of R^D, so g is injective on R^dv and v is a function of the noise-free x: the setting
  of identifiability results.

Randomness is derived from one seed with `np.random.SeedSequence(seed, spawn_key=key)`: the data set's shared draws
and every video have their own key, so video i is the same whatever the number of videos, and changing, e.g., the
feature dimension changes only the mixing network.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from hal_jax.data import formats
from hal_jax.errors import ConfigError

# Spawn-key prefixes of the random streams (see `rng_for`).
WORLD_STRUCTURE = 0  # classes, activities, durations
WORLD_PROTOTYPES = 1
WORLD_DYNAMICS = 2  # drift directions, emission W, transitions B
WORLD_MIXING = 3
VIDEO_STREAMS = {"train": 10, "test": 11}  # + (video index, part)
PART_STRUCTURE = 0  # what happens in the video (transcript, durations, instances)
PART_LATENTS = 1  # how it looks (latent and observation noise, bursts)

# The warm-up before frame 0 lasts until the initial state's influence falls below this (far below float32
# resolution of the features).
_FORGET_TOLERANCE = 1e-7
_MAX_WARMUP = 4096


def rng_for(seed: int, *key: int) -> np.random.Generator:
  """The generator of stream `key` of `seed` (independent of every other key)."""
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


@dataclasses.dataclass(frozen=True)
class ProcessConfig:
  """Settings of the latent process and the mixing (see the module docstring for the symbols).

  Attributes:
    action_dim: da, the dimension of the action latent c.
    visual_dim: dv, the dimension of the visual latent v.
    feature_dim: D, the dimension of the observed features x (>= visual_dim, so that g can be injective).
    lags: L, the number of time-delayed parents of v_t.
    ar_strength: Σ_l a_l, the operator-norm bound of the VAR (< 1: stable); higher = smoother, slower v.
    prototype_scale: std of the state prototypes p_a (the class signal).
    instance_noise: σ_i, std of the per-segment deviation of c from its prototype.
    drift: δ, length of the pseudo-state drift of c over one segment.
    style_noise: σ_o, std of the per-video offset o of v.
    visual_noise: σ_v, std of the VAR innovations.
    burst_rate: expected number of visual bursts per frame inside segments.
    burst_length: (min, max) length of a burst in frames (inclusive).
    burst_scale: σ_b, std of a burst's offset of v.
    mixing_depth: number of nonlinear layers of g (0 = linear mixing).
    mixing_slope: α, the negative slope of g's leaky ReLUs (1 = linear, small = strongly nonlinear).
    observation_noise: σ_x, std of the noise added to the features.
  """
  action_dim: int = 8
  visual_dim: int = 16
  feature_dim: int = 64
  lags: int = 2
  ar_strength: float = 0.7
  prototype_scale: float = 1.0
  instance_noise: float = 0.3
  drift: float = 0.5
  style_noise: float = 0.25
  visual_noise: float = 0.2
  burst_rate: float = 0.004
  burst_length: tuple[int, int] = (8, 32)
  burst_scale: float = 1.5
  mixing_depth: int = 2
  mixing_slope: float = 0.2
  observation_noise: float = 0.05

  def validate(self, prefix: str) -> None:
    """Raises ConfigError(f"{prefix}.<field>", problem) for an impossible setting."""
    def check(ok: bool, name: str, what: str) -> None:
      if not ok:
        raise ConfigError(f"{prefix}.{name}", f"{what}, got {getattr(self, name)!r}")
    check(self.action_dim >= 1, "action_dim", "must be >= 1")
    check(self.visual_dim >= 1, "visual_dim", "must be >= 1")
    check(self.feature_dim >= self.visual_dim, "feature_dim",
          f"must be >= visual_dim ({self.visual_dim}) for the mixing to be invertible")
    check(self.lags >= 1, "lags", "must be >= 1")
    check(0.0 <= self.ar_strength < 1.0, "ar_strength", "must be in [0, 1) for a stable process")
    for name in ("prototype_scale", "instance_noise", "drift", "style_noise", "visual_noise", "burst_rate",
                 "burst_scale", "observation_noise"):
      check(getattr(self, name) >= 0.0, name, "must be >= 0")
    low, high = self.burst_length
    check(1 <= low <= high, "burst_length", "must be (min, max) with 1 <= min <= max")
    check(self.mixing_depth >= 0, "mixing_depth", "must be >= 0")
    check(0.0 < self.mixing_slope <= 1.0, "mixing_slope", "must be in (0, 1] for the mixing to be invertible")


@dataclasses.dataclass(frozen=True)
class Process:
  """The random draws shared by all videos of a data set.

  Attributes:
    config: the settings they were drawn with.
    prototypes: [S, da] p_a per state.
    drift_directions: [S, da] u_a per state (unit norm).
    emission: [dv, da] W.
    transitions: [L, dv, dv] B_l (l = 1..L).
    warmup: frames the VAR runs before t = 0 so that a video starts in its stationary regime (the influence of the
      state before the warm-up has decayed below 1e-7 by then).
    injection: [dv, D] sqrt(D/dv) Q_0, the first (linear) layer of g.
    layers: ([D, D] γ O_k, [D] β_k) per nonlinear layer of g.
  """
  config: ProcessConfig
  prototypes: np.ndarray
  drift_directions: np.ndarray
  emission: np.ndarray
  transitions: np.ndarray
  warmup: int
  injection: np.ndarray
  layers: tuple[tuple[np.ndarray, np.ndarray], ...]


@dataclasses.dataclass(frozen=True)
class VideoSample:
  """The latents and features of one video.

  Attributes:
    action: [T, da] float32 c.
    visual: [T, dv] float32 v.
    features: [T, D] float32 x.
    burst: [T] bool, True on frames inside a visual burst.
  """
  action: np.ndarray
  visual: np.ndarray
  features: np.ndarray
  burst: np.ndarray


def random_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
  """A Haar-random orthogonal matrix: [n, n]."""
  q, r = np.linalg.qr(rng.standard_normal([n, n]))
  return q * np.sign(np.diag(r))  # The sign fix makes the distribution uniform (Mezzadri 2007).


def sample_prototypes(config: ProcessConfig, num_states: int, seed: int) -> np.ndarray:
  """Independent state prototypes: [num_states, da] ~ N(0, prototype_scale² I)."""
  rng = rng_for(seed, WORLD_PROTOTYPES)
  return config.prototype_scale * rng.standard_normal([num_states, config.action_dim])


def _memory(transitions: np.ndarray) -> int:
  """The number of frames after which the VAR (transitions: [L, dv, dv]) has forgotten its state.

  That is where its impulse response H_0 = I, H_j = Σ_l B_l H_{j-l} has stayed below the tolerance for L steps.
  """
  lags, dim, _ = transitions.shape
  response = [np.eye(dim)]
  while len(response) < _MAX_WARMUP:
    j = len(response)
    response.append(sum(transitions[l - 1] @ response[j - l] for l in range(1, min(j, lags) + 1)))
    if all(np.abs(h).max() < _FORGET_TOLERANCE for h in response[-lags:]):
      break
  return len(response)


def make_process(config: ProcessConfig, prototypes: np.ndarray, seed: int) -> Process:
  """Draws the dynamics and the mixing network of a data set.

  Args:
    config: the process settings.
    prototypes: [S, da] the state prototypes (from `sample_prototypes`, or built hierarchically by the caller).
    seed: the data set seed.
  """
  num_states = prototypes.shape[0]
  da, dv, dim = config.action_dim, config.visual_dim, config.feature_dim
  rng = rng_for(seed, WORLD_DYNAMICS)
  directions = rng.standard_normal([num_states, da])
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  # Entries N(0, 1/da) give W c about the per-dimension scale of c.
  emission = rng.standard_normal([dv, da]) / np.sqrt(da)
  weights = 0.5 ** np.arange(config.lags)  # Nearer parents weigh more.
  weights = config.ar_strength * weights / weights.sum()
  transitions = np.stack([w * random_orthogonal(rng, dv) for w in weights])

  rng = rng_for(seed, WORLD_MIXING)
  injection = random_orthogonal(rng, dim)[:dv] * np.sqrt(dim / dv)
  layers = []
  gain = np.sqrt(2.0 / (1.0 + config.mixing_slope**2))
  for _ in range(config.mixing_depth):
    bias = 0.5 * rng.standard_normal([dim])  # Moves the kinks off the origin so every unit bends somewhere else.
    layers.append((gain * random_orthogonal(rng, dim), bias))
  return Process(config, prototypes, directions, emission, transitions, _memory(transitions), injection,
                 tuple(layers))


def mix(process: Process, visual: np.ndarray) -> np.ndarray:
  """The noise-free observations g(v): visual [T, dv] -> [T, D] float32."""
  slope = np.float32(process.config.mixing_slope)
  # float32 like the features it makes: several times faster than float64 BLAS on large videos.
  hidden = visual.astype(np.float32) @ process.injection.astype(np.float32)
  for weight, bias in process.layers:
    hidden += bias.astype(np.float32)
    hidden = np.where(hidden >= 0, hidden, slope * hidden) @ weight.astype(np.float32)
  return hidden


def unmix(process: Process, features: np.ndarray) -> np.ndarray:
  """The inverse of `mix` on its image: features [T, D] -> [T, dv]."""
  slope = process.config.mixing_slope
  hidden = features
  for weight, bias in reversed(process.layers):
    hidden = hidden @ weight.T / (2.0 / (1.0 + slope**2))  # weight = γ O, so its inverse is O^T / γ = weight^T / γ².
    hidden = np.where(hidden >= 0, hidden, hidden / slope) - bias
  dv, dim = process.injection.shape
  return hidden @ process.injection.T * (dv / dim)  # injection = s Q_0, Q_0 with orthonormal rows: inverse Q_0^T / s.


def _bursts(segments: Sequence[tuple[int, int, int]], config: ProcessConfig, length: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Visual bursts strictly inside segments: offsets [T, dv] and mask [T] bool."""
  offsets = np.zeros([length, config.visual_dim])
  mask = np.zeros([length], bool)
  low, high = config.burst_length
  for _, start, end in segments:
    room = end - start - 2  # A burst never touches a boundary: it must not move where an action starts.
    if room < low or config.burst_rate == 0:
      continue
    for _ in range(rng.poisson(config.burst_rate * (end - start))):
      size = int(rng.integers(low, min(high, room) + 1))
      first = int(rng.integers(start + 1, end - 1 - size + 1))
      offsets[first:first + size] += config.burst_scale * rng.standard_normal([config.visual_dim])
      mask[first:first + size] = True
  return offsets, mask


@dataclasses.dataclass(frozen=True)
class _Draws:
  """The random draws of one video (everything but the shared matrix products), float64.

  Attributes:
    action: [T, da] c.
    offset: [T, dv] style plus bursts, o + b_t.
    burst: [T] bool burst mask.
    innovations: [warmup + T, dv] σ_v η_t, the first `warmup` for the frames before t = 0.
    noise: [T, D] σ_x ξ_t.
  """
  action: np.ndarray
  offset: np.ndarray
  burst: np.ndarray
  innovations: np.ndarray
  noise: np.ndarray


def _draw(process: Process, segments: Sequence[tuple[int, int, int]], rng: np.random.Generator) -> _Draws:
  """Draws one video's randomness from its stream; segments: (state, start, end_exclusive) from frame 0."""
  config = process.config
  states = np.array([s for s, _, _ in segments])
  starts = np.array([b for _, b, _ in segments])
  lengths = np.array([e - b for _, b, e in segments])
  length = int(starts[-1] + lengths[-1])
  segment_of = np.repeat(np.arange(len(segments)), lengths)  # [T]
  progress = (np.arange(length) - starts[segment_of]) / np.maximum(lengths[segment_of] - 1, 1)  # τ_t in [0, 1]
  instance = process.prototypes[states] + config.instance_noise * rng.standard_normal([len(segments),
                                                                                       config.action_dim])
  drift = config.drift * (progress - 0.5)[:, None] * process.drift_directions[states][segment_of]
  style = config.style_noise * rng.standard_normal([config.visual_dim])
  burst_offsets, burst_mask = _bursts(segments, config, length, rng)
  innovations = config.visual_noise * rng.standard_normal([process.warmup + length, config.visual_dim])
  noise = config.observation_noise * rng.standard_normal([length, config.feature_dim])
  return _Draws(instance[segment_of] + drift, style + burst_offsets, burst_mask, innovations, noise)


def _observe(process: Process, draws: Sequence[_Draws]) -> list[VideoSample]:
  """The visual latents and features of several videos at once.

  The VAR runs as a loop over frames that advances all videos together, each padded to the longest: a step is L
  tiny matrix products, so the loop costs microseconds per frame whatever the number of videos. The other products
  run once over all frames: one large product is many times faster than many small ones.
  """
  config = process.config
  dim, lags, warmup = config.visual_dim, config.lags, process.warmup
  lengths = np.array([d.action.shape[0] for d in draws])
  starts = np.cumsum(lengths) - lengths
  level = np.concatenate([d.action for d in draws]) @ process.emission.T + np.concatenate(
      [d.offset for d in draws])  # [N, dv] the stationary mean W c + o + b
  # Frame index -warmup..T-1 per video; the warm-up repeats the first level so that each video starts in the
  # stationary regime rather than from v = 0. Frames past a video's end are padding (zero drive, never read).
  steps = warmup + int(lengths.max())
  padded = np.zeros([steps, len(draws), dim])  # Time-major: each step of the loop below reads contiguous rows.
  for k, (start, n) in enumerate(zip(starts, lengths)):
    padded[:warmup, k] = level[start]
    padded[warmup:warmup + n, k] = level[start:start + n]
  leak = np.eye(dim) - process.transitions.sum(axis=0)
  drive = padded @ leak.T
  for k, d in enumerate(draws):
    drive[:d.innovations.shape[0], k] += d.innovations
  # history[t + L] = v_t; the L leading zeros are the (forgotten) state before the warm-up.
  history = np.zeros([lags + steps, len(draws), dim])
  parents = [b.T.copy() for b in process.transitions]  # parents[l - 1] multiplies v_{t-l}
  for t in range(steps):
    history[t + lags] = drive[t]
    for lag, weight in enumerate(parents, 1):
      history[t + lags] += history[t + lags - lag] @ weight
  visual = np.concatenate([history[lags + warmup:lags + warmup + n, k] for k, n in enumerate(lengths)])
  visual = visual.astype(np.float32)
  features = mix(process, visual) + np.concatenate([d.noise for d in draws]).astype(np.float32)
  return [VideoSample(d.action.astype(np.float32), visual[s:s + n], features[s:s + n], d.burst)
          for d, s, n in zip(draws, starts, lengths)]


def sample_videos(process: Process, videos: Iterable[tuple[Sequence[tuple[int, int, int]], np.random.Generator]],
                  chunk_frames: int = 1 << 17) -> Iterator[VideoSample]:
  """Draws the latents and features of videos, in order.

  Args:
    process: the data set's shared draws.
    videos: per video its (state, start, end_exclusive) segments, contiguous from frame 0 in temporal order, and
      its latent stream.
    chunk_frames: videos are processed together in chunks of about this many frames (see `_observe`); the
      result does not depend on it.

  Yields:
    One VideoSample per video.
  """
  pending: list[_Draws] = []
  frames = 0
  for segments, rng in videos:
    pending.append(_draw(process, segments, rng))
    frames += pending[-1].action.shape[0]
    if frames >= chunk_frames:
      yield from _observe(process, pending)
      pending, frames = [], 0
  if pending:
    yield from _observe(process, pending)


def sample_split(process: Process, seed: int, split: str,
                 structures: Sequence[tuple[str, Sequence[tuple[int, int, int]]]]) -> Iterator[VideoSample]:
  """The latents and features of a split's videos, in order (see `sample_videos`).

  Args:
    process: the data set's shared draws.
    seed: the data set seed.
    split: "train" or "test"; video i draws from stream (VIDEO_STREAMS[split], i, PART_LATENTS) of `seed`, so it
      looks the same whatever the number of videos.
    structures: per video, in index order, its name and (state, start, end_exclusive) segments.

  Yields:
    One VideoSample per video.
  """
  rngs = (rng_for(seed, VIDEO_STREAMS[split], index, PART_LATENTS) for index in range(len(structures)))
  yield from sample_videos(process, ((segments, rng) for (_, segments), rng in zip(structures, rngs)))


def write_latents(path: str, sample: VideoSample, **extra: np.ndarray) -> None:
  """Writes latents/<video>.npz: `action` [T, da], `visual` [T, dv] float32, `burst` [T] bool and `extra` arrays.

  No temporary file: it is written inside the staging directory of `staging.staged_directory`, which appears atomically.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path, action=sample.action, visual=sample.visual, burst=sample.burst, **extra)


def write_settings(root: str, config, *, kind: str, background: str | None, feature_layout: str, num_classes: int,
                   **extra) -> None:
  """Writes <root>/synthetic.json: what made the data set and how to read it, then the `extra` entries.

  Args:
    root: the data set directory.
    config: the generator's settings (a dataclass with a `process` ProcessConfig), stored whole so that
      `synthetic.ensure_generated` can tell whether a directory holds the data set of a config.
    kind: "segmentation" or "localization".
    background: the background class name, or None.
    feature_layout: "DT" or "TD", the layout of the stored features.
    num_classes: the number of (fine) classes.
    **extra: more JSON-serialisable entries, stored after these in the given order.
  """
  settings = {
      "kind": kind,
      "generator": "hal_jax.data.synthetic",
      "config": dataclasses.asdict(config),
      "background": background,
      "feature_layout": feature_layout,
      "feature_dim": config.process.feature_dim,
      "action_dim": config.process.action_dim,
      "visual_dim": config.process.visual_dim,
      "num_classes": num_classes,
      **extra,
  }
  formats.write_text_atomic(os.path.join(root, "synthetic.json"), json.dumps(settings, indent=2) + "\n")
