r"""HAL: hierarchical action latents + smooth transition constraint on top of ATBA (the headline method).

Huang et al., CVPR 2026 (arXiv 2602.24275); spec ../shared/specs/hal_atba.md §7. Same presets as configs/atba.py
(HAL uses 5 encoder layers everywhere), plus one variant per row of HAL's ablation table (Table 5):

  python -m hal_jax.main --config=configs/hal.py --workdir=/tmp/hal                       # synthetic, full HAL
  python -m hal_jax.main --config=configs/hal.py:test --workdir=/tmp/hal_test
  python -m hal_jax.main --config=configs/hal.py:synthetic,ablation=kl_only --workdir=/tmp/hal_kl

Ablations (weights from spec §10: rec 0.1, KL 1e-3, L_s 1e-3, δ 0.1):

  baseline    ATBA itself (method hal_jax.methods.atba, 5 layers)
  rec_only    + L_r:  reconstruction only
  smooth_only + L_s:  the hinge ReLU(S_c − S_v) only (δ = 0)
  kl_only     + L_KL: KL only
  delta_only  + δ:    the global action-change term δ S_c only (no hinge)
  full        everything (the default)
"""

import ml_collections

from configs import atba as atba_config
from hal_jax import config_args

# Each ablation row sets these keys (everything else is the preset's); the first is the default.
_ABLATIONS = {
    "full": dict(),
    "baseline": dict(method="hal_jax.methods.atba", rec_weight=0.0, kl_weight=0.0, smooth_weight=0.0),
    "rec_only": dict(rec_weight=0.1, kl_weight=0.0, smooth_weight=0.0),
    "smooth_only": dict(rec_weight=0.0, kl_weight=0.0, smooth_weight=1e-3, smooth_delta=0.0, smooth_hinge=True),
    "kl_only": dict(rec_weight=0.0, kl_weight=1e-3, smooth_weight=0.0),
    "delta_only": dict(rec_weight=0.0, kl_weight=0.0, smooth_weight=1e-3, smooth_delta=0.1, smooth_hinge=False),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked HAL config of `arg`, ``"<preset>[,ablation=NAME]"`` (default "synthetic", full HAL;
  hal_jax.config_args)."""
  preset, options = config_args.parse_arg(arg, file=__file__, presets=atba_config.PRESETS, default="synthetic",
                                          options={"ablation": tuple(_ABLATIONS)})
  ablation = options["ablation"]
  config = atba_config.get_config(preset)
  with config.unlocked():
    config.method = "hal_jax.methods.hal"
    config.num_layers = 5  # HAL's Breakfast command; not published for the others [spec §13: 5].
    config.z_layer = 1  # Taps at layers 1 (visual) and 2 (action), 0-based.
    config.rec_weight = 0.1
    config.kl_weight = 1e-3
    config.smooth_weight = 1e-3
    config.smooth_delta = 0.1
    config.smooth_hinge = True
    config.smooth_on_mean = False  # L_s on sampled latents z (spec §7.3); True: on the means μ.
    config.stop_gradient_target = False  # Reconstruct the tap input without detaching it (spec §7.3).
    if preset == "test":
      config.num_layers = 3
    config.update(_ABLATIONS[ablation])
    config.ablation = ablation
  config.lock()
  return config
