# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Pose-aware segmentation: a transcript-supervised host plus pose-to-RGB distillation
#
# The pose method (Zhao et al., CVPR Workshops) trains a transcript-supervised host (ATBA here; `host=hal` in the
# config argument switches to HAL) with a training-only pose branch: each feature step with a 2-D pose gets a pose
# embedding, and image↔pose InfoNCE pulls the host's frame tokens towards it, with negatives only at poses at least
# `pose_delta` away. Inference is the host's, RGB only. The synthetic data carries COCO-17 poses drawn with the
# actions; `mode=online` in the config argument makes the encoder causal.
#
# The notebook trains the method on its synthetic default on whatever backend is attached (Colab TPU or GPU, or the
# CPU): the training loop builds a `('data',)` mesh over every device, so nothing here names a device. It defines no
# training logic of its own. On Colab, run the install cell first (it installs from the repository checkout in the
# current directory, or from the path in `HAL_JAX_SOURCE`).

# %%
import os
import subprocess
import sys

try:
  import hal_jax  # noqa: F401  (already installed, e.g. in the project's venv)
except ImportError:
  source = os.environ.get("HAL_JAX_SOURCE", ".")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", source], check=True)

# %%
import re
import tempfile

import jax

from configs import pose as method_config
from hal_jax import report
from hal_jax import train
from hal_jax.main import results_table

print("backend:", jax.default_backend(), "devices:", jax.devices())

# %% [markdown]
# ## Configure
# `synthetic` is the method's default experiment (`synthetic,loss=none` is the same host without poses: the
# baseline). CI runs this notebook with `HAL_JAX_NOTEBOOK_PRESET=test` (tiny) and `HAL_JAX_NOTEBOOK_EPOCHS=1`.

# %%
preset = os.environ.get("HAL_JAX_NOTEBOOK_PRESET", "synthetic")
workdir = os.environ.get("HAL_JAX_NOTEBOOK_WORKDIR") or tempfile.mkdtemp(prefix="hal_jax_pose_")
config = method_config.get_config(preset)
with config.unlocked():
  config.tensorboard = False
  config.num_epochs = int(os.environ.get("HAL_JAX_NOTEBOOK_EPOCHS", config.num_epochs))
  # The global batch is split over every device: round it up to a multiple of their number (8 on a TPU v2-8).
  config.batch_size = -(-config.batch_size // jax.device_count()) * jax.device_count()
print(preset, config.variant, "->", workdir, "| devices in the mesh:", jax.device_count())

# %% [markdown]
# ## Train and evaluate
# The data set (features, labels, transcripts and `poses/<video>.npz`) is generated into `<workdir>/data` on first
# use; training resumes if the workdir holds checkpoints.

# %%
result = train.train_and_evaluate(config, workdir)
print(results_table(result.eval_metrics))

# %% [markdown]
# ## The run report
# `python -m hal_jax.report --workdir=...` writes the same page: config, metrics, training curves (the pose InfoNCE
# term among the loss terms) and the figures below, in one self-contained HTML file.

# %%
path = report.build_report(workdir, max_videos=3)
page = open(path, encoding="utf-8").read()
print(path, len(page) // 1024, "KiB")

# %% [markdown]
# The training curves and the report's per-video bars (ground truth above, prediction below; background grey).

# %%
wanted = ("Training curves", "Segmentation: ground truth vs prediction")
shown = re.findall(r"<section><h2>(.*?)</h2>.*?</section>", page, re.DOTALL)
print("sections:", shown)
try:
  from IPython.display import HTML, display
  for section in re.findall(r"<section>.*?</section>", page, re.DOTALL):
    if any(f"<h2>{title}</h2>" in section for title in wanted):
      display(HTML(section))
except ImportError:
  pass
assert all(title in shown for title in wanted), shown
