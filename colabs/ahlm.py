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
# # AHLM: action localization from video-level labels with change points
#
# AHLM (Wang et al.) is a hierarchical VAE over snippet features with GRU transitions (`lax.scan`); change points
# come from the KL ratio of its latents, and a foreground/background/context attention MIL turns video labels into
# temporal detections. The synthetic data is THUMOS-like, written in the ActivityNet format.
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

from configs import ahlm as method_config
from hal_jax import report
from hal_jax import train
from hal_jax.main import results_table

print("backend:", jax.default_backend(), "devices:", jax.devices())

# %% [markdown]
# ## Configure
# `synthetic` is the method's default experiment; CI runs this notebook with `HAL_JAX_NOTEBOOK_PRESET=test` (tiny)
# and `HAL_JAX_NOTEBOOK_EPOCHS=1`.

# %%
preset = os.environ.get("HAL_JAX_NOTEBOOK_PRESET", "synthetic")
workdir = os.environ.get("HAL_JAX_NOTEBOOK_WORKDIR") or tempfile.mkdtemp(prefix="hal_jax_ahlm_")
config = method_config.get_config(preset)
with config.unlocked():
  config.tensorboard = False
  config.num_epochs = int(os.environ.get("HAL_JAX_NOTEBOOK_EPOCHS", config.num_epochs))
  # The global batch is split over every device: round it up to a multiple of their number (8 on a TPU v2-8).
  config.batch_size = -(-config.batch_size // jax.device_count()) * jax.device_count()
print(preset, "->", workdir, "| devices in the mesh:", jax.device_count())

# %% [markdown]
# ## Train and evaluate
# The data set is generated into `<workdir>/data` on first use; training resumes if the workdir holds checkpoints.

# %%
result = train.train_and_evaluate(config, workdir)
print(results_table(result.eval_metrics))

# %% [markdown]
# ## The run report
# `python -m hal_jax.report --workdir=...` writes the same page: config, metrics, training curves and the figures
# below, in one self-contained HTML file.

# %%
path = report.build_report(workdir, max_videos=3)
page = open(path, encoding="utf-8").read()
print(path, len(page) // 1024, "KiB")

# %% [markdown]
# Each test video's timeline: ground truth on top, the best detections below (opacity = score), AHLM's change
# points as dashed lines (after pruning) and short ticks (before).

# %%
wanted = ("Localization and change points", "Identifiability")
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
