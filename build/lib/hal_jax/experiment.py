"""What one config makes before anything trains: the validated config, the data, the method, the mesh, the optimizer
and the initial train state. Training (`hal_jax.train`) and restoring (`hal_jax.inference`) start from it.

`build` checks the whole config once (`check_config`), before the data is read, so bad input fails in one place.

Randomness: `config.seed` is the only seed. The init, dropout and refresh keys are `fold_in(key(seed), stream)` with
the streams below; the loop folds the step (dropout) or the epoch (refresh) into them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from hal_jax import config_check
from hal_jax import model_selection
from hal_jax import optim
from hal_jax import sharding
from hal_jax import tasks
from hal_jax.methods import base

INIT_STREAM, DROPOUT_STREAM, REFRESH_STREAM = 0, 1, 2


@flax.struct.dataclass
class TrainState:
  """Everything training changes: the global step, the parameters, the optimizer state and, for methods with
  refreshed state (`base.has_state`, e.g. pseudo-labels), that state (None otherwise)."""
  step: jax.Array
  params: Any
  opt_state: Any
  method_state: Any = None


@dataclasses.dataclass(frozen=True)
class Experiment:
  """The parts of a run that a config fixes.

  Attributes:
    config: the checked config.
    data: the task's `hal_jax.tasks.base.ExperimentData`.
    method: the `hal_jax.methods.base.Method`.
    mesh: the ('data',) mesh.
    tx: the optimizer.
    refresh_data: what the method's `refresh` reads (`base.has_state`), else None.
    state: the initial train state, replicated on `mesh`.
    abstract_state: its shapes, dtypes and shardings (what checkpoints are restored into).
  """
  config: ml_collections.ConfigDict
  data: Any
  method: base.Method
  mesh: jax.sharding.Mesh
  tx: optax.GradientTransformation
  refresh_data: Any
  state: TrainState
  abstract_state: Any


def check_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """The one validation pass of a config: impossible values, the batch against the devices, the selection setting.

  Raises:
    ConfigError: naming the first bad key.
  """
  config_check.validate_config(config)
  config_check.check_batch_size(config, num_devices)
  model_selection.selection_mode(config)


def load_data(config: ml_collections.ConfigDict, workdir: str) -> tasks.ExperimentData:
  """The experiment data of the method's task (`hal_jax.tasks.load`), validated before anything is trained."""
  return tasks.load(base.method_task(config), config, workdir)


def init_state(method: base.Method, tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
               example_batch: Mapping[str, jax.Array], mesh: jax.sharding.Mesh,
               method_state: Any = None) -> tuple[TrainState, Any]:
  """Initial train state, replicated on `mesh`, and its abstract (shape + sharding) twin for restoring.

  `method_state` is the method's initial refreshed state (`base.has_state`), None for other methods.
  """
  init_key = stream_key(config, INIT_STREAM)

  def make(batch, method_state):
    params = method.init(init_key, batch)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      method_state=method_state)

  abstract = jax.eval_shape(make, example_batch, method_state)
  replicated = sharding.replicated_sharding(mesh)
  shardings = jax.tree.map(lambda _: replicated, abstract)
  state = jax.jit(make, out_shardings=shardings)(example_batch, method_state)
  abstract = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), abstract,
                          shardings)
  return state, abstract


def build(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh | None = None) -> Experiment:
  """Checks `config`, reads (or generates) its data and initialises its method on `mesh` (default: every device).

  Raises:
    HalJaxError: bad input (config or data), before anything is trained or written besides the data's workdir.
  """
  mesh = mesh or sharding.make_mesh()
  check_config(config, mesh.size)
  data = load_data(config, workdir)  # Validates every file before anything is trained.
  method = base.make_method(config, data.label_map.names)
  tx = optim.make_optimizer(config)
  example = sharding.shard_batch(data.train_pipeline.batch(0, 0), mesh)
  refresh_data = method.refresh_data(data.train) if base.has_state(method) else None
  method_state = method.init_state(refresh_data) if refresh_data is not None else None
  state, abstract_state = init_state(method, tx, config, example, mesh, method_state)
  return Experiment(config=config, data=data, method=method, mesh=mesh, tx=tx, refresh_data=refresh_data,
                    state=state, abstract_state=abstract_state)


def stream_key(config: ml_collections.ConfigDict, stream: int) -> jax.Array:
  """The key of random `stream` (DROPOUT_STREAM, REFRESH_STREAM, ...) of the run."""
  return jax.random.fold_in(jax.random.key(config.seed), stream)
