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
# # HAAN: fine-grained localization with visual concepts
#
# HAAN (Li et al., ECCV 2022) clusters clip features into visual concepts with k-means on device, composes each
# fine class from its nearest concepts (cosine distance) and ties fine classes to coarse ones. The synthetic data is
# FineGym-like (4 coarse → 16 fine classes). The checkpoint is selected on held-out training videos.
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

from configs import haan as method_config
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
workdir = os.environ.get("HAL_JAX_NOTEBOOK_WORKDIR") or tempfile.mkdtemp(prefix="hal_jax_haan_")
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
# The localization timelines and the concept gallery: the test clips nearest each visual concept, with their
# ground-truth class and the concept's purity.

# %%
wanted = ("Localization", "Concept gallery")
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
