r"""H-CLIP: hierarchical video recognition with class texts, hierarchy units and a top-down filter.

Zhang et al. (abstract only); the design is the project's own, ../shared/specs/hclip.md. Presets and variants:

  python -m hal_jax.main --config=configs/hclip.py --workdir=/tmp/hclip                  # "synthetic", full model
  python -m hal_jax.main --config=configs/hclip.py:test --workdir=/tmp/hclip_test
  python -m hal_jax.main --config=configs/hclip.py:synthetic,variant=flat --workdir=/tmp/hclip_flat
  python -m hal_jax.main --config=configs/hclip.py:fma --workdir=/tmp/fma --config.data_dir=/data/fma

Presets: ``synthetic`` (spec test bed 1: 4 x 5 classes, weak fine signal, synthetic class texts), ``test`` (tiny),
``fma`` (4 items x 3 scores, patients, ordinal scores), ``finegym_elements`` (the real FineGym event -> set -> element
taxonomy and splits with synthetic features inside each element's span, text-free). With an empty ``data_dir`` the
preset's synthetic data is generated into ``<workdir>/data`` (nothing is downloaded); otherwise ``data_dir`` is a
recognition directory (hal_jax/data/recognition_formats.py).

Variants (everything else is the preset's):

  full        the model of the spec (default)
  flat        no hierarchy units and no text conditioning (the flat per-level CLIP classifier); its flat
              predictions (``*_flat`` metrics) are the flat baseline
  no_text_cond  without the parent-conditioned fine text
  no_hc       without the hierarchy-consistency loss

Model selection (off by default): ``--config.select_checkpoint=validation --config.validation_fraction=0.2`` holds
out a fifth of the training patients and keeps the checkpoint with their best ``selection_metric`` (the filtered
accuracy of the finest level); its test scores are the run's result.
"""

import ml_collections

from hal_jax import config_args

_PRESETS = {
    "synthetic": dict(synthetic_preset="recognition", hidden_dim=128, mlp_dim=256, num_heads=4, num_epochs=20,
                      batch_size=32, learning_rate=1e-3, eval_every_epochs=5, checkpoint_every_steps=250),
    # Tiny and fast to fit: 80 epochs of 4 steps fit the 64 training clips exactly (tests rely on it).
    "test": dict(synthetic_preset="recognition_test", num_frames=8, hidden_dim=32, mlp_dim=64, num_heads=2,
                 num_layers=1, num_epochs=80, batch_size=16, learning_rate=1e-2, eval_every_epochs=40,
                 checkpoint_every_steps=160, log_every_steps=20, dropout=0.0),
    "fma": dict(synthetic_preset="fma", hidden_dim=128, mlp_dim=256, num_heads=4, num_epochs=30, batch_size=32,
                learning_rate=1e-3, eval_every_epochs=5, checkpoint_every_steps=250),
    "finegym_elements": dict(synthetic_preset="finegym_elements", hidden_dim=128, mlp_dim=256, num_heads=4,
                             embed_dim=128, num_epochs=10, batch_size=64, learning_rate=1e-3, eval_every_epochs=2,
                             checkpoint_every_steps=1000, selection_metric="acc_l3"),
}

_VARIANTS = {
    "full": dict(),
    "flat": dict(use_units=False, use_text_conditioning=False),
    "no_text_cond": dict(use_text_conditioning=False),
    "no_hc": dict(hc_weight=0.0),
}


def base_config() -> ml_collections.ConfigDict:
  """Every key of an H-CLIP experiment with the spec's values (§5); presets change some."""
  config = ml_collections.ConfigDict()
  config.method = "hal_jax.methods.hclip"
  config.seed = 0

  config.data_dir = ""  # Empty: generate `synthetic_preset` into <workdir>/data.
  config.synthetic_preset = "recognition"
  config.train_subset = "train"
  config.test_subset = "test"
  config.text_free = False  # True: ignore the data's class texts and learn class embeddings.
  config.validation_fraction = 0.0  # Share of training patients held out (scored as validation).
  # Model selection (hal_jax.model_selection): "last" | "validation" (needs validation_fraction > 0) | "test".
  config.select_checkpoint = "last"
  config.selection_metric = "acc_l2"  # Fine-level accuracy with the filter: acc_l<L> for a taxonomy of L levels.
  config.num_frames = 16  # T: segment-based sampling of every clip (spec §5).

  config.hidden_dim = 512  # Temporal encoder width.
  config.num_layers = 2
  config.num_heads = 8
  config.mlp_dim = 2048
  config.dropout = 0.1
  config.embed_dim = 512  # Text-free mode: width of the learned class embeddings (else the texts' width).
  config.use_units = True  # F2C / C2F hierarchy units.
  config.use_text_conditioning = True  # Parent-conditioned fine text.
  config.hc_weight = 0.5  # Hierarchy-consistency loss.
  config.logit_scale_init = 1.0 / 0.07
  config.logit_scale_max = 100.0

  config.num_epochs = 30
  config.warmup_epochs = 1
  # True (spec §5): linear warm-up over the steps of the warm-up epochs, then cosine to 0. False: the loop's
  # epoch-level schedule (warm-up epochs at 1% of the rate, then cosine), as RESULTS.md's H-CLIP runs were trained.
  config.warmup_per_step = True
  config.stage_epoch = 0
  config.batch_size = 32
  config.learning_rate = 1e-4
  config.weight_decay = 0.05
  # Spec §5: no decay on biases, LayerNorm scales, the position embedding and the logit scale (hal_jax.optim).
  config.weight_decay_exempt = "bias,scale,position_embedding,log_logit_scale"
  config.final_lr_factor = 0.0

  config.eval_every_epochs = 5
  config.log_every_steps = 10
  config.checkpoint_every_steps = 1000
  config.checkpoints_to_keep = 2
  config.tensorboard = True
  config.progress = True
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of `arg`, ``"<preset>[,variant=NAME]"`` (default "synthetic", variant "full";
  hal_jax.config_args)."""
  return config_args.build(arg, file=__file__, base_config=base_config, presets=_PRESETS, default="synthetic",
                           options={"variant": _VARIANTS})
