"""Tests for hal_jax.sharding on the 4 fake CPU devices of conftest.py, plus a real two-process run."""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

from hal_jax import sharding
from hal_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_make_mesh_is_one_auto_data_axis_over_all_devices():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ("data",)
  assert mesh.axis_types == (AxisType.Auto,)
  assert mesh.size == jax.device_count() == 4
  assert [d.id for d in mesh.devices.flat] == sorted(d.id for d in jax.devices())
  assert sharding.make_mesh(jax.devices()[:2]).size == 2


def test_shardings():
  mesh = sharding.make_mesh()
  assert sharding.batch_sharding(mesh).spec == PartitionSpec("data")
  assert sharding.replicated_sharding(mesh).spec == PartitionSpec()


def test_shard_batch_splits_rows_over_the_devices():
  mesh = sharding.make_mesh()
  features = np.arange(8 * 3 * 2, dtype=np.float32).reshape(8, 3, 2)
  mask = np.array([True] * 7 + [False])
  batch = sharding.shard_batch({"features": features, "batch_mask": mask}, mesh)
  array = batch["features"]
  assert isinstance(array, jax.Array) and array.shape == (8, 3, 2)
  assert len(array.addressable_shards) == 4
  for shard in array.addressable_shards:
    # Device k of the mesh holds rows [2k, 2k + 2).
    k = list(mesh.devices.flat).index(shard.device)
    np.testing.assert_array_equal(shard.data, features[2 * k:2 * k + 2])
  np.testing.assert_array_equal(np.asarray(batch["batch_mask"]), mask)
  assert batch["batch_mask"].dtype == jnp.bool_


def test_jit_over_a_sharded_batch_and_replicated_params():
  mesh = sharding.make_mesh()
  batch = sharding.shard_batch({"x": np.arange(8, dtype=np.float32)}, mesh)
  params = jax.device_put({"w": np.float32(2.0)}, sharding.replicated_sharding(mesh))
  assert params["w"].sharding.is_fully_replicated
  total = jax.jit(lambda p, b: jnp.sum(p["w"] * b["x"]))(params, batch)
  assert float(total) == 2.0 * 28


def test_shard_batch_rejects_rows_that_do_not_divide_over_devices():
  with pytest.raises(ValueError, match="features"):
    sharding.shard_batch({"features": np.zeros((6, 2), np.float32)}, sharding.make_mesh())


def test_to_host_fetches_whole_arrays():
  batch = {"features": np.arange(24, dtype=np.float32).reshape(8, 3)}
  whole = sharding.to_host(sharding.shard_batch(batch, sharding.make_mesh()))
  assert isinstance(whole["features"], np.ndarray)
  np.testing.assert_array_equal(whole["features"], batch["features"])


def test_map_blocks_gives_what_one_device_computing_every_block_gives():
  params = jax.device_put(jnp.linspace(-1.0, 1.0, 3), sharding.replicated_sharding(sharding.make_mesh()))
  fn = jax.jit(lambda p, x: jnp.tanh(x @ p) / 3.0)
  blocks = [np.random.default_rng(i).normal(size=(4, 3)).astype(np.float32) for i in range(5)]  # 5 over 4 devices.
  got = sharding.map_blocks(fn, params, blocks.__getitem__, len(blocks))
  one_device = jax.device_put(np.asarray(params), jax.devices()[0])
  np.testing.assert_array_equal(got, np.stack([np.asarray(fn(one_device, block)) for block in blocks]))


def test_initialize_distributed_is_a_no_op_for_one_process():
  assert not sharding.initialize_distributed()
  assert not sharding.initialize_distributed("localhost:1234", 1, 0)


def test_initialize_distributed_validates_its_arguments():
  with pytest.raises(ConfigError) as error:
    sharding.initialize_distributed("localhost:1234", 2, None)
  assert error.value.where == "process_id"
  with pytest.raises(ConfigError) as error:
    sharding.initialize_distributed("localhost:1234", 2, 2)
  assert error.value.where == "process_id"


# Each process joins the job, builds its local slices with the pipeline and checks, with a cross-process jit, that
# the global batch equals the batch a single host builds.
_WORKER = textwrap.dedent("""
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import jax.numpy as jnp
    import numpy as np
    from hal_jax import sharding
    from hal_jax.data import segmentation_pipeline as pipeline
    from hal_jax.data.formats import LabelMap
    from hal_jax.data.segmentation_formats import SegmentationDataset, SegmentationVideo

    address, process_id = sys.argv[1], int(sys.argv[2])
    assert sharding.initialize_distributed(address, 2, process_id)
    assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2

    rng = np.random.default_rng(0)
    videos = tuple(
        SegmentationVideo(f"v{i}", rng.normal(size=(n, 2)).astype(np.float32), np.zeros(n, np.int32),
                          np.array([i % 3], np.int32))
        for i, n in enumerate([7, 30, 12, 25, 3, 18, 9]))
    dataset = SegmentationDataset("/toy", LabelMap(("a", "b", "c")), videos)
    args = dict(batch_size=4, sample_rate=2, bucket_lengths=(8, 16), max_transcript=2, seed=3, train=True)
    pipe = pipeline.SegmentationPipeline(dataset, **args)
    assert pipe.local_batch_size == 2
    single = pipeline.SegmentationPipeline(dataset, process_index=0, process_count=1, **args)
    mesh = sharding.make_mesh()
    weights = jnp.arange(1.0, 5.0)  # Row weights make the reduction depend on the row order too.
    reduce = jax.jit(lambda b: jnp.einsum("b,btd->", weights, b["features"]),
                     out_shardings=sharding.replicated_sharding(mesh))
    for index, batch in enumerate(pipe.global_batches(1, mesh)):
      expected = single.batch(1, index)
      assert batch["features"].shape == expected["features"].shape
      for shard in batch["video_index"].addressable_shards:
        rows = expected["video_index"][shard.index]
        np.testing.assert_array_equal(shard.data, rows)
      want = np.einsum("b,btd->", np.arange(1.0, 5.0), expected["features"])
      np.testing.assert_allclose(float(reduce(batch)), want, rtol=1e-5)
      # Every process can fetch the whole global batch (evaluation scores every row on every host).
      whole = sharding.to_host(batch)
      for name, value in expected.items():
        np.testing.assert_array_equal(whole[name], value)
    # map_blocks: the blocks are split over both processes and every process gets every output (3 blocks: process 1
    # pads its second one; 1 block: process 1 has none).
    scale = jax.device_put(jnp.float32(2.0), sharding.replicated_sharding(mesh))  # Global and replicated, as params.
    for count in (3, 1):
      got = sharding.map_blocks(jax.jit(lambda s, x: s * x + 1), scale, lambda i: np.full((2, 3), i, np.float32), count)
      np.testing.assert_array_equal(got, np.stack([np.full((2, 3), 2 * i + 1, np.float32) for i in range(count)]))
    print("worker", process_id, "ok")
""")


@pytest.mark.slow
def test_two_processes_build_the_one_host_global_batch(tmp_path):
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    port = probe.getsockname()[1]
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("XLA_FLAGS", None)
  workers = [subprocess.Popen([sys.executable, str(script), f"localhost:{port}", str(p)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in range(2)]
  outputs = []
  for worker in workers:
    try:
      outputs.append(worker.communicate(timeout=240)[0])
    except subprocess.TimeoutExpired:
      for w in workers:
        w.kill()
      raise
  for p, (worker, output) in enumerate(zip(workers, outputs)):
    assert worker.returncode == 0, output[-3000:]
    assert f"worker {p} ok" in output
