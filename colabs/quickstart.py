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
# # hal_jax quickstart: ATBA on synthetic hierarchical data
#
# This notebook installs hal_jax, generates the synthetic data set (HAL's hierarchical causal process: slow action
# latents → fast visual latents → features, written in the MS-TCN format), trains ATBA for a few minutes on whatever
# backend is attached (Colab TPU / GPU, or CPU), evaluates it and shows segmentation plots. It defines no training
# logic of its own: everything is `hal_jax`.
#
# On Colab, run the install cell first (it installs from the repository checkout in the current directory, or from
# the path in `HAL_JAX_SOURCE`).

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
import json
import tempfile

import jax

from configs import atba as atba_config
from hal_jax import inference
from hal_jax import train
from hal_jax.main import results_table

print("backend:", jax.default_backend(), "devices:", jax.devices())

# %% [markdown]
# ## Configure
# `synthetic` trains for a few minutes on a CPU; CI runs this notebook with `HAL_JAX_QUICKSTART_PRESET=test`
# and `HAL_JAX_NOTEBOOK_EPOCHS=1`.

# %%
preset = os.environ.get("HAL_JAX_QUICKSTART_PRESET", "synthetic")
workdir = os.environ.get("HAL_JAX_QUICKSTART_WORKDIR") or tempfile.mkdtemp(prefix="hal_jax_quickstart_")
config = atba_config.get_config(preset)
with config.unlocked():
  config.tensorboard = False
  config.num_epochs = int(os.environ.get("HAL_JAX_NOTEBOOK_EPOCHS", config.num_epochs))
print(preset, "->", workdir)

# %% [markdown]
# ## Train and evaluate
# The data set is generated into `<workdir>/data` on first use; training resumes if the workdir holds checkpoints.

# %%
result = train.train_and_evaluate(config, workdir)
print(results_table(result.eval_metrics))
print(json.dumps({k: round(v, 2) for k, v in result.eval_metrics.items()}, indent=1))

# %% [markdown]
# ## Predict and plot
# `<video>.txt` prediction files (one label per raw frame) and one PNG per test video: ground truth above, prediction
# below.

# %%
data, method, params, mesh, step = inference.restore_trained(config, workdir)
out_dir = os.path.join(workdir, "predictions")
count = data.write_predictions(inference.predict_batches(method, params, data.test_pipeline, mesh), out_dir)
plots = sorted(os.listdir(os.path.join(out_dir, "plots")))
print(count, "videos predicted at step", step, "; plots:", plots[:3])

# %%
try:
  from IPython.display import Image, display
  for name in plots[:3]:
    display(Image(filename=os.path.join(out_dir, "plots", name)))
except ImportError:
  pass
