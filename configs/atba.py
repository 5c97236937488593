r"""ATBA: transcript-supervised action segmentation with action-transition-aware boundary alignment.

Xu & Zheng, CVPR 2024 (arXiv 2403.19225); every detail is in ../shared/specs/hal_atba.md. Presets are chosen with
the config argument:

  python -m hal_jax.main --config=configs/atba.py --workdir=/tmp/atba              # "synthetic", the default
  python -m hal_jax.main --config=configs/atba.py:test --workdir=/tmp/atba_test    # tiny, well under a minute
  python -m hal_jax.main --config=configs/atba.py:breakfast --workdir=/tmp/bf \
      --config.data_dir=/data/breakfast --config.split=1

Override any key on the command line (`--config.num_epochs=100`). Real-data presets use the paper's
hyper-parameters (spec §10); `config.data_dir` must then point to an MS-TCN style directory. With an empty
`data_dir` the synthetic default is generated into `<workdir>/data` (no download).
"""

import ml_collections

from hal_jax import config_args

# Presets and the keys that differ from the shared defaults below (spec hal_atba.md §10).
PRESETS = {
    # The embedded default: the synthetic hierarchical data (hal_jax.data.synthetic preset "default").
    # One bucket (bucket_multiple 256): shuffled batches almost always hold a long video, so smaller buckets would
    # only add compiles.
    "synthetic": dict(synthetic_preset="default", background="background", feature_dim=64, sample_rate=8,
                      bucket_multiple=256, max_positions=256, num_epochs=16, stage_epoch=8, warmup_epochs=3,
                      batch_size=16, hidden_dim=64, num_layers=5, eval_every_epochs=8, checkpoint_every_steps=64,
                      transition_kernel=15, learning_rate=1e-3),
    # Tiny: for tests and smoke runs.
    "test": dict(synthetic_preset="test", background="background", feature_dim=16, sample_rate=2,
                 max_positions=512, num_epochs=4, stage_epoch=2, warmup_epochs=2, batch_size=4, hidden_dim=32,
                 num_layers=3, eval_every_epochs=2, checkpoint_every_steps=4, log_every_steps=2,
                 transition_kernel=7, learning_rate=1e-3),
    # Real features: config.data_dir is required (no synthetic default for these).
    "breakfast": dict(synthetic_preset="", background="SIL", feature_dim=2048, sample_rate=10, max_positions=1000,
                      num_epochs=400, num_layers=6),
    "hollywood": dict(synthetic_preset="", background="background", feature_dim=2048, feature_layout="TD",
                      sample_rate=5, max_positions=600, num_epochs=300, num_layers=6, transition_kernel=23,
                      background_weight=0.8, length_tolerance=7),
    "crosstask": dict(synthetic_preset="", background="background", feature_dim=3200, sample_rate=1,
                      max_positions=10000, num_epochs=300, num_layers=6, boundary_scale=0.1, background_weight=0.8),
    "gtea": dict(synthetic_preset="", background="background", feature_dim=2048, sample_rate=2, max_positions=5000,
                 num_epochs=400, num_layers=6),
}


def base_config() -> ml_collections.ConfigDict:
  """Every key of an ATBA experiment with ATBA's Breakfast values (spec §10); presets change some."""
  config = ml_collections.ConfigDict()
  config.method = "hal_jax.methods.atba"
  config.seed = 0
  # Matmuls and activations in this dtype ("float32" | "bfloat16"); parameters, optimizer state, softmaxes,
  # losses and metrics stay float32 (hal_jax/precision.py).
  config.compute_dtype = "float32"

  # Data.
  config.data_dir = ""  # Empty: generate the synthetic preset `synthetic_preset` into <workdir>/data.
  config.synthetic_preset = "default"
  # Or a prepared TFDS dataset instead of a directory (hal_jax.tfds; e.g. "mstcn_segmentation/gtea", splits
  # train_split<split> / test_split<split>), in tfds_data_dir (empty: TFDS's default). Empty: data_dir is read.
  config.tfds_name = ""
  config.tfds_data_dir = ""
  config.split = 1
  config.feature_layout = "DT"  # MS-TCN stores features as [D, T]; "TD" for sets stored [T, D].
  config.feature_dim = 2048
  config.length_tolerance = 0  # Frames by which features may exceed labels (trimmed); Hollywood: 7.
  config.background = "SIL"  # Label name of the background class (MoF-Bg, background weight).
  config.sample_rate = 10
  config.bucket_multiple = 64  # Padded lengths are multiples of this (bounded recompiles).
  config.max_transcript = 0  # 0: the longest transcript of the data.

  # Model (spec §4).
  config.hidden_dim = 256
  config.num_layers = 6
  config.num_heads = 1
  config.dropout = 0.1
  config.max_positions = 1000  # Positional table P = floor(max_len / sample_rate).
  # Layers whose outputs the identifiability metrics probe (HAL's tap layers; spec §7.3, 0-based).
  config.z_layer = 1

  # Pseudo-labels (spec §5).
  config.boundary_kernel = 7
  config.boundary_scale = 0.3
  config.transition_kernel = 31
  config.candidate_multiplier = 4

  # Losses (spec §6).
  config.video_weight = 1.0
  config.frame_weight = 1.0
  config.contrast_weight = 0.1
  config.contrast_temperature = 0.2
  config.background_weight = 1.0

  # Optimisation (spec §8).
  config.num_epochs = 400
  config.stage_epoch = 40
  config.warmup_epochs = 10
  config.batch_size = 32
  config.learning_rate = 5e-4
  config.weight_decay = 1e-4
  config.coupled_weight_decay = False  # AdamW: decay decoupled from the gradient, on every parameter (spec §8.2).
  config.final_lr_factor = 0.01

  # Bookkeeping.
  config.eval_every_epochs = 10
  config.log_every_steps = 10
  config.checkpoint_every_steps = 1000
  config.checkpoints_to_keep = 3
  config.tensorboard = True
  config.progress = True
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of `arg`, ``"<preset>"`` (default "synthetic"; hal_jax.config_args)."""
  return config_args.build(arg, file=__file__, base_config=base_config, presets=PRESETS, default="synthetic")
