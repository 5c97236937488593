r"""Export a trained model's inference function for deployment, with `jax.export`.

  python -m hal_jax.export --workdir=DIR --out=FILE [--platforms=cpu,cuda,tpu]

`FILE` (a zip) holds the serialized StableHLO of `method.predict` with the trained parameters baked in, and
`meta.json` (the inputs with their symbolic shapes, the class names, the method, the step, the data settings). The
function is shape-polymorphic in the batch size `b` and the number of (downsampled) frames, `T = m*k` with `m` the
multiple the network's time axis needs (the data pipeline's bucket lengths are multiples of it). It takes only the
batch entries the prediction reads (e.g. `features` [b, T, D] float32 and `frame_mask` [b, T] bool) and returns what
`--mode=predict` computes (e.g. `frame_logits` [b, T, C]). `hal_jax.deploy` loads and runs it with JAX alone, without
this library's training code. The parameters are those `--mode=eval` restores (the selected checkpoint when the run
selects one). The file is written to a temporary name and renamed.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

from hal_jax import errors
from hal_jax import quiet

PROGRAM = "predictor.stablehlo"
META = "meta.json"
FORMAT_VERSION = 1


def used_inputs(predict, spec: Mapping[str, Any]) -> list[str]:
  """The batch entries `predict(batch)` reads, found from its jaxpr (an input no equation uses is not an input)."""
  import jax  # pylint: disable=g-import-not-at-top
  names = sorted(spec)
  closed = jax.make_jaxpr(lambda *arrays: predict(dict(zip(names, arrays))))(*(spec[n] for n in names))
  jaxpr = closed.jaxpr
  read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
  return [name for name, var in zip(names, jaxpr.invars) if id(var) in read]


def _time_multiple(bucket_lengths: Sequence[int]) -> int:
  return functools.reduce(math.gcd, [int(n) for n in bucket_lengths])


def export_predictor(method, params: Any, pipeline, platforms: Sequence[str] | None = None,
                     max_frames: int | None = None):
  """`method.predict` with `params` baked in, exported shape-polymorphic in batch size and time.

  Args:
    method: the trained method (`hal_jax.methods`).
    params: its parameters.
    pipeline: an evaluation pipeline of the data (its `batch_spec` names the inputs and their dtypes).
    platforms: lowering platforms (default: the current backend's).
    max_frames: the longest padded time axis the network takes (e.g. its positional table), or None.
  Returns:
    (exported, inputs): the `jax.export.Exported` and, per input name, its symbolic shape as text.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax import export  # pylint: disable=g-import-not-at-top
  multiple = _time_multiple(pipeline.bucket_lengths)
  short, long = pipeline.batch_spec(multiple), pipeline.batch_spec(2 * multiple)
  predict = functools.partial(method.predict, params)
  names = used_inputs(predict, short)
  constraints = [f"{multiple}*k <= {max_frames}"] if max_frames else []
  batch, steps = export.symbolic_shape("b, k", constraints=constraints)
  symbolic, text = {}, {}
  for name in names:
    # Axis 0 is the batch; an axis whose size follows the padded length is time; the others are fixed.
    shape = [batch] + [multiple * steps if a != b else a for a, b in zip(short[name].shape[1:], long[name].shape[1:])]
    symbolic[name] = jax.ShapeDtypeStruct(tuple(shape), short[name].dtype)
    text[name] = {"shape": [str(d) for d in shape], "dtype": str(short[name].dtype)}
  unused = {name: short[name] for name in short if name not in names}

  def infer(inputs):
    # Entries the prediction does not read still complete the batch dict it expects (any value will do).
    b = inputs[names[0]].shape[0]
    filler = {n: jax.numpy.zeros((b,) + s.shape[1:], s.dtype) for n, s in unused.items()}
    return predict({**filler, **inputs})

  exported = export.export(jax.jit(infer), platforms=platforms)(symbolic)
  return exported, text


def write_exported(path: str, exported, meta: Mapping[str, Any]) -> None:
  """Writes the zip of `exported` and `meta` atomically."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
    archive.writestr(PROGRAM, bytes(exported.serialize()))
    archive.writestr(META, json.dumps(meta, indent=1, sort_keys=True))
  handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory)
  try:
    with os.fdopen(handle, "wb") as file:
      file.write(buffer.getvalue())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise


def export_workdir(workdir: str, out: str, platforms: Sequence[str] | None = None,
                   max_frames: int | None = None) -> dict[str, Any]:
  """Exports the trained model of `workdir` to `out`; returns the metadata written.

  `max_frames` bounds the time axis (default: `config.max_positions` when the network has a positional table).

  Raises:
    HalJaxError: the workdir has no config.json or no checkpoint, or its data cannot be read.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from hal_jax import report  # pylint: disable=g-import-not-at-top
  from hal_jax import inference  # pylint: disable=g-import-not-at-top
  from hal_jax.methods import base  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(workdir):
    raise errors.ConfigError("--workdir", f"{workdir}: not a directory")
  config = ml_collections.ConfigDict(report.read_config(workdir))
  data, method, params, _, step = inference.restore_trained(config, workdir)
  params = jax.device_get(params)
  max_frames = max_frames or config.get("max_positions")
  exported, inputs = export_predictor(method, params, data.test_pipeline, platforms, max_frames)
  meta = {
      "format_version": FORMAT_VERSION, "method": method.name, "task": base.method_task(config).value,
      "step": int(step),
      "class_names": list(data.label_map.names), "inputs": inputs, "outputs": sorted(exported.out_tree.unflatten(
          [None] * exported.out_tree.num_leaves)),
      "time_multiple": _time_multiple(data.test_pipeline.bucket_lengths), "platforms": list(exported.platforms),
      "max_frames": max_frames, "feature_dim": int(config.feature_dim),
      "sample_rate": int(config.get("sample_rate", 1)),
      "jax_version": jax.__version__,
  }
  write_exported(out, exported, meta)
  return meta


def main(argv: Sequence[str]) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  values = flags.FLAGS
  quiet.quiet_logging(values.verbose)
  with errors.exit_on_bad_input(verbose=values.verbose, leave_at_once=True):
    if not values.workdir:
      raise errors.ConfigError("--workdir", "is required")
    if not values.out:
      raise errors.ConfigError("--out", "is required")
    meta = export_workdir(values.workdir, values.out, values.platforms or None, values.max_frames)
  print(json.dumps({"out": values.out, "step": meta["step"], "inputs": meta["inputs"], "outputs": meta["outputs"]}))


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  absl_flags.DEFINE_string("workdir", None, "Run directory with a trained checkpoint.")
  absl_flags.DEFINE_string("out", None, "Output file (a zip of the StableHLO program and meta.json).")
  absl_flags.DEFINE_list("platforms", [], "Lowering platforms, e.g. cpu,cuda,tpu; default: the current backend.")
  absl_flags.DEFINE_integer("max_frames", None, "Longest padded time axis; default config.max_positions, if any.")
  absl_flags.DEFINE_bool("verbose", False, "Print tracebacks of bad-input errors.")
  app.run(main)
