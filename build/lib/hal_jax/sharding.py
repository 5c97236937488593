"""Device mesh, shardings and multi-host helpers for data-parallel training.

hal_jax trains data-parallel on a 1-D mesh with one axis, ``'data'``: parameters and optimiser state are replicated,
every batch is split along its leading (video) dimension. `jax.jit` propagates these shardings through the step, so no
method code ever names a device.

Multi-host (TPU pods, GPU clusters): call `initialize_distributed` first thing in the process; every process then
builds its *local* slice of each global batch (see `hal_jax.data.segmentation_pipeline`) and `shard_batch` assembles
the global `jax.Array`s without any host ever holding the whole batch. `to_host` brings whole arrays back to every
process (evaluation, where each host scores every video).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from hal_jax.errors import ConfigError

# The one mesh axis. Batches are sharded along it, parameters are replicated over it.
DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D ``('data',)`` mesh over `devices` (default: all devices of all processes), with an Auto axis.

  The axis is `AxisType.Auto` because `jax.make_mesh` now defaults to Explicit axes, which reject unsharded inputs to
  `jax.shard_map` and make every jitted function state its output shardings; data parallelism needs neither.

  Devices are ordered by (process index, device id), so each process owns one contiguous block of rows of every
  global batch: process p's rows are ``[p * B / P, (p + 1) * B / P)``, exactly the rows the input pipeline builds for
  it. For a single data axis the order has no effect on the gradient all-reduce's result.
  """
  if devices is None:
    devices = jax.devices()
  if not devices:
    raise ValueError("make_mesh needs at least one device")
  ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.array(ordered), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Shards the leading (batch) dimension over ``'data'``; trailing dimensions stay whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """A full copy on every device (parameters, optimiser state, RNG keys, scalars)."""
  return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles global batch arrays from this process's local slice.

  Args:
    batch: name -> host array ``[B_local, ...]``, the rows of the global batch that this process owns (with one
      process, the whole batch). Every process passes arrays of the same shapes and dtypes.
    mesh: the ``('data',)`` mesh (`make_mesh`).

  Returns:
    name -> `jax.Array` of shape ``[B_local * process_count, ...]``, sharded on ``'data'`` along axis 0.

  Raises:
    ValueError: if a local leading dimension is not a multiple of this process's number of devices in the mesh
      (each device must get the same number of rows).
  """
  sharding = batch_sharding(mesh)
  local_devices = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
  global_batch = {}
  for name, value in batch.items():
    value = np.asarray(value)
    if value.ndim == 0 or value.shape[0] % local_devices:
      raise ValueError(f"batch[{name!r}] has shape {value.shape}: its leading dimension must be a multiple of the "
                       f"{local_devices} local devices")
    global_batch[name] = jax.make_array_from_process_local_data(sharding, value)
  return global_batch


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           *,
                           auto_detect: bool = False) -> bool:
  """Joins a multi-process JAX job (thin wrapper over `jax.distributed.initialize`).

  Must run before anything touches a device (`jax.devices()`, a computation, a `device_put`). A single-process run
  (no arguments and no `auto_detect`, or ``num_processes == 1``) does nothing, so the same entry point works on a
  laptop and a cluster.

  Args:
    coordinator_address: ``host:port`` of process 0's coordinator service (every process passes the same).
    num_processes: total number of processes.
    process_id: this process's index in ``[0, num_processes)``.
    auto_detect: let JAX take what is not given from the environment, as `jax.distributed.initialize` documents:
      Cloud TPU pods (every host runs the same command), SLURM, Open MPI, ``JAX_COORDINATOR_ADDRESS``. Without it,
      the three arguments must be given together.

  Returns:
    Whether `jax.distributed.initialize` was called.

  Raises:
    ConfigError: a multi-process run is asked for with an argument missing or out of range, or `auto_detect` finds
      no cluster environment.
  """
  if not auto_detect:
    if coordinator_address is None and num_processes is None and process_id is None:
      return False
    if num_processes == 1:
      return False
    for key, value in (("coordinator_address", coordinator_address), ("num_processes", num_processes),
                       ("process_id", process_id)):
      if value is None:
        raise ConfigError(key, "is required for a multi-process run: give coordinator_address, num_processes and "
                          "process_id together, or let JAX detect them (auto_detect; --distributed)")
  if num_processes is not None and num_processes < 1:
    raise ConfigError("num_processes", f"must be >= 1, got {num_processes}")
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise ConfigError("process_id", f"{process_id} is outside [0, {num_processes})")
  # CPU processes exchange collectives through gloo over TCP (the default of this JAX, named so that a changed
  # default cannot silently leave CPU jobs without cross-process collectives). GPUs and TPUs ignore it.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  except ValueError as error:  # JAX found no cluster environment to fill in what is missing.
    raise ConfigError("distributed", f"no cluster environment was detected (jax.distributed.initialize: {error}); "
                      "give coordinator_address, num_processes and process_id") from None
  return True


def to_host(tree: Any) -> Any:
  """NumPy copies of the whole of every array in `tree`, on every process.

  With one process this is `jax.device_get`. With several, a batch-sharded array spans devices of other processes,
  which `jax.device_get` refuses; it is all-gathered first (`multihost_utils.process_allgather`), so that every
  process holds the same complete values. Evaluation uses it: each host scores the whole test split and gets the same
  numbers. Collective: every process must call it with arrays of the same global shapes.
  """
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def map_blocks(fn: Callable[[Any, np.ndarray], jax.Array], args: Any, block: Callable[[int], np.ndarray],
               num_blocks: int) -> np.ndarray:
  """``np.stack([fn(args, block(i)) for i in range(num_blocks)])`` on every process, the blocks split across all
  devices of all processes.

  Process p computes blocks ``[p * K, (p + 1) * K)`` (K = ⌈num_blocks / P⌉; it reads only those), each whole on one
  of its devices in turn, with `args` copied to that device; then the processes exchange their outputs in one
  all-gather. A block's output is the same program run on the same input, whichever device runs it, and the
  exchange moves bits without arithmetic, so the result is bitwise what one device computing every block gives.
  Collective with several processes: each must call it with the same `num_blocks` and block shapes.

  Args:
    fn: a jitted function of (args, [rows, ...] block); its output has the same shape and dtype for every block.
    args: a pytree of arrays (e.g. replicated parameters), passed to every call.
    block: the host array of block i (every block of one shape).
    num_blocks: how many blocks (>= 1).

  Returns:
    [num_blocks, ...] host array of the outputs, in block order.
  """
  processes, index = jax.process_count(), jax.process_index()
  per_process = -(-num_blocks // processes)
  mine = range(index * per_process, min(num_blocks, (index + 1) * per_process))
  devices = jax.local_devices()
  local = jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, args)
  copies = [jax.device_put(local, device) for device in devices]
  outputs, in_flight = [], []
  for n, i in enumerate(mine):
    in_flight.append(fn(copies[n % len(devices)], jax.device_put(block(i), devices[n % len(devices)])))
    if len(in_flight) == 2 * len(devices):  # Two blocks per device in flight: memory stays bounded.
      outputs.append(np.asarray(in_flight.pop(0)))
  outputs.extend(np.asarray(out) for out in in_flight)
  if processes == 1:
    return np.stack(outputs)
  # A process without blocks of its own (fewer blocks than processes) contributes padding of the outputs' shape.
  like = outputs[0] if outputs else jax.eval_shape(fn, local, block(0))
  padded = np.zeros([per_process, *like.shape], like.dtype)
  for n, out in enumerate(outputs):
    padded[n] = out
  return np.asarray(multihost_utils.process_allgather(padded, tiled=True))[:num_blocks]
