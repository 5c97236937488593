r"""AHLM: weakly-supervised action localization with hierarchically-structured latent attention (Wang et al.).

Every detail is in ../shared/specs/ahlm.md. Presets are chosen with the config argument, optionally followed by an
ablation of the paper's Table 3 (",ablation=NAME"):

  python -m hal_jax.main --config=configs/ahlm.py --workdir=/tmp/ahlm                  # "synthetic", the default
  python -m hal_jax.main --config=configs/ahlm.py:test --workdir=/tmp/ahlm_test        # tiny, seconds
  python -m hal_jax.main --config=configs/ahlm.py:thumos14 --workdir=/tmp/thumos \
      --config.data_dir=/data/thumos14_i3d
  python -m hal_jax.main --config=configs/ahlm.py:thumos14,ablation=fg_bg_ct --workdir=/tmp/efc \
      --config.data_dir=/data/thumos14_i3d                                             # EFC only (Table 3 row 5)

The synthetic default generates the THUMOS-like synthetic set (hal_jax.data.synthetic preset "thumos": 100 train /
40 test videos, 10 classes, D = 64) into <workdir>/data and trains smaller networks than the paper's for 420 steps
(about 0.28 s each on one CPU core, under 3 minutes in all); it prints mAP@0.1..0.7, the average mAP and the
change-point F1 against the generating process's true boundaries. Expected (seed 0): average mAP 60.0
(mAP@0.1 63.0, @0.5 59.3, @0.7 58.2), change-point F1 73 within ±2 snippets; the EFC-only ablation
(`synthetic,ablation=fg_bg_ct`) gives an average mAP of 59.1.

Real-data presets use the paper's hyper-parameters (spec section 4); `data_dir` must then be a localization
directory (hal_jax.data.localization_formats: gt.json, video_info.tsv, features/<video>.npy with I3D RGB+flow
[T, 2048] per 16-frame snippet); THUMOS14 evaluates the 210 videos of `splits/test.txt` in it (copy
third_party/thumos14/splits there).

Optimiser: Adam with coupled L2 weight decay (PyTorch `Adam(weight_decay=5e-4)`, `coupled_weight_decay=True`) at a
constant rate (the method's `learning_rate`).
"""

import ml_collections

from hal_jax import config_args

# THUMOS-style tIoU thresholds (0.1..0.7) and ActivityNet's (0.5..0.95); spec section 7.
_THUMOS_TIOU = "0.1:0.7:0.1"
_ACTIVITYNET_TIOU = "0.5:0.95:0.05"

# Presets and the keys that differ from the paper's THUMOS14 values of `base_config`.
_PRESETS = {
    # The embedded default: THUMOS-like synthetic data, networks scaled to D = 64 so it runs on a laptop CPU.
    "synthetic": dict(synthetic_preset="thumos", feature_dim=64, train_length=256, batch_size=16, num_epochs=60,
                      learning_rate=1e-3, encoder_dim=128, gru_dim=64, latent_dim=16, head_dim=64, embed_dim=256,
                      attention_dim=64, dropout=0.5, bucket_multiple=320, eval_every_epochs=60,
                      checkpoint_every_steps=200),
    # Tiny: for tests and smoke runs.
    "test": dict(synthetic_preset="thumos_test", feature_dim=16, train_length=48, batch_size=4, num_epochs=2,
                 learning_rate=1e-3, encoder_dim=16, gru_dim=8, latent_dim=4, head_dim=8, embed_dim=16,
                 attention_dim=8, dropout=0.5, bucket_multiple=32, eval_every_epochs=1, checkpoint_every_steps=2,
                 log_every_steps=1),
    # Paper: 200 validation videos for training, the 210-video test list; T = 750; 4k steps = 308 epochs of 13.
    "thumos14": dict(synthetic_preset="", train_subset="validation", test_subset="test",
                     test_video_list="splits/test.txt", num_epochs=308),
    # Paper: training set -> validation set; batch 64, T = 150; 10k steps = 67 epochs of 151 batches.
    "activitynet": dict(synthetic_preset="", train_subset="training", test_subset="validation",
                        train_length=150, batch_size=64, num_epochs=67, snap_window=2,
                        tiou_thresholds=_ACTIVITYNET_TIOU),
}

# The rows of the paper's Table 3: which losses train (the foreground loss always does). "elbo" = the DFC branch
# (its loss and its change points at inference). Table 4's MIL baseline with / without change points corresponds to
# "fg" / "fg_elbo". The first row is the default.
_ABLATIONS = {
    "full": dict(use_background_loss=True, use_context_loss=True, use_dfc=True),
    "fg": dict(use_background_loss=False, use_context_loss=False, use_dfc=False),
    "fg_elbo": dict(use_background_loss=False, use_context_loss=False, use_dfc=True),
    "fg_bg": dict(use_background_loss=True, use_context_loss=False, use_dfc=False),
    "fg_bg_elbo": dict(use_background_loss=True, use_context_loss=False, use_dfc=True),
    "fg_bg_ct": dict(use_background_loss=True, use_context_loss=True, use_dfc=False),
}


def base_config() -> ml_collections.ConfigDict:
  """Every key of an AHLM experiment with the paper's THUMOS14 values (spec section 4); presets change some."""
  config = ml_collections.ConfigDict()
  config.method = "hal_jax.methods.ahlm"
  config.seed = 0
  # Matmuls and activations in this dtype ("float32" | "bfloat16"); parameters, optimizer state, softmaxes,
  # losses and metrics stay float32 (hal_jax/precision.py).
  config.compute_dtype = "float32"

  # Data (a localization directory; spec section 6).
  config.data_dir = ""  # Empty: generate the synthetic preset `synthetic_preset` into <workdir>/data.
  config.synthetic_preset = "thumos"  # Empty for real-data presets: data_dir is then required.
  # Or a prepared TFDS dataset instead of a directory (hal_jax.tfds; e.g. "activitynet_localization/thumos14", one
  # split per gt.json subset), in tfds_data_dir (empty: TFDS's default). Empty: data_dir is read.
  config.tfds_name = ""
  config.tfds_data_dir = ""
  config.train_subset = "train"
  config.test_subset = "test"
  config.test_video_list = ""  # Optional list of the evaluated videos, relative to data_dir (or absolute).
  config.feature_dim = 2048  # I3D RGB 1024 + flow 1024 per 16-frame snippet.
  config.train_length = 750  # Snippets per training video T (binned random sampling, spec section 4).
  config.bucket_multiple = 256  # Test videos are padded to a multiple of this (bounded recompiles).
  config.tiou_thresholds = _THUMOS_TIOU

  # DFC (spec section 2.2).
  config.encoder_dim = 1024
  config.gru_dim = 256
  config.latent_dim = 64
  config.head_dim = 256
  config.change_alpha = 0.15
  config.beta_min = 0.15
  config.beta_max = 0.9
  config.beta_init = 0.9

  # EFC (spec section 2.3).
  config.embed_dim = 2048
  config.attention_dim = 512
  config.dropout = 0.7

  # Losses (spec section 3) and the ablation switches of Table 3.
  config.use_background_loss = True
  config.use_context_loss = True
  config.use_dfc = True
  config.dfc_weight = 1.0

  # Inference (spec section 5).
  config.class_threshold = 0.2
  config.attention_thresholds = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))
  config.foreground_threshold = 0.5
  config.snap_window = 3
  config.video_score_weight = 0.2
  config.nms_tiou = 0.5
  config.lcs_cosine = 0.65
  config.lcs_ratio = 0.5
  config.change_point_tolerance = 2  # Boundary F1 tolerance in snippets (spec section 9).

  # Optimisation (spec section 4): Adam, lr 1e-4, weight decay 5e-4, constant rate.
  config.batch_size = 16
  config.num_epochs = 308
  config.learning_rate = 1e-4
  config.weight_decay = 5e-4
  config.coupled_weight_decay = True

  # Bookkeeping.
  config.eval_every_epochs = 50
  config.log_every_steps = 10
  config.checkpoint_every_steps = 1000
  config.checkpoints_to_keep = 3
  config.tensorboard = True
  config.progress = True
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of `arg`, ``"<preset>[,ablation=NAME]"`` (default "synthetic", ablation "full";
  hal_jax.config_args)."""
  return config_args.build(arg, file=__file__, base_config=base_config, presets=_PRESETS, default="synthetic",
                           options={"ablation": _ABLATIONS})
