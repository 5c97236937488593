r"""HAL's smooth-transition term L_s: how strong its gradient is, and what its weight does.

  python benchmarks/smooth_term.py --level=0.5 --seed=0 --weights=0.001,0.01,0.1,1 \
      --workdir=/tmp/hal_evidence --out=results/smooth

For each weight w it trains full HAL (`configs/hal.py:synthetic`, smooth_weight = w) on the sweep's data set at
difficulty `--level` (same sizes and run layout as benchmarks/hal_evidence.py, run tag `_ls<w>`), stopping at the
stage switch and then every `--every` epochs. At each stop it measures, on `--batches` training batches in stage-1
mode, the gradient norms on the shared encoder (params["encoder"]) of

  L_ATBA  = L_vid + L_fr + 0.1 L_glc       (what ATBA trains; pseudo-labels from the dropout pass, as in training)
  L_s                                       (unweighted; the hinge ReLU(S_c − S_v) + δ S_c, on the sampled latents)

and the ratio w‖∇L_s‖ / ‖∇L_ATBA‖, plus the fraction of videos whose hinge is active (S_c > S_v). Training resumes
from the stop's checkpoint, so the run is the same as an uninterrupted one. Writes <out>/smooth.jsonl (one line per
weight: the final test metrics and the gradient trace) and <out>/smooth.md. Resumable like the sweep.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
import hal_evidence  # Sets the compilation cache and the import path first.
import jax
import jax.numpy as jnp

from hal_jax import checkpoint as checkpoint_lib
from hal_jax import train
from hal_jax.data import formats
from hal_jax.data import synthetic
from hal_jax.methods import base
from hal_jax.methods import hal
from hal_jax.metric_writer import write_json_atomic
# pylint: enable=wrong-import-position


def gradient_norms(method, params, batch, rng) -> dict[str, jax.Array]:
  """‖∇_encoder L_ATBA‖, ‖∇_encoder L_s‖ and the hinge's active fraction on one batch (stage 1, dropout on)."""
  c = method.config
  dropout_rng, latent_rng = jax.random.split(rng)

  def terms(p):
    outputs, taps = method.network.apply({"params": p}, batch["features"], batch["frame_mask"], deterministic=False,
                                         latent_rng=latent_rng, rngs={"dropout": dropout_rng})
    atba_loss, _ = method.atba_losses(outputs, batch, 1)
    visual, action = (t.mean if c.smooth_on_mean else t.sample for t in taps)
    s_sum, s_count = hal.smooth_transition_loss(visual, action, batch["frame_mask"], batch["batch_mask"],
                                                delta=c.smooth_delta, hinge=c.smooth_hinge)
    s_visual, _ = hal.soft_max_change(visual, batch["frame_mask"])
    s_action, _ = hal.soft_max_change(action, batch["frame_mask"])
    active = jnp.sum((s_action > s_visual) & batch["batch_mask"]) / jnp.maximum(jnp.sum(batch["batch_mask"]), 1)
    return atba_loss, s_sum / jnp.maximum(s_count, 1.0), active

  def norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))

  grad_atba = jax.grad(lambda p: terms(p)[0])(params)["encoder"]
  grad_smooth = jax.grad(lambda p: terms(p)[1])(params)["encoder"]
  active = terms(params)[2]
  return {"atba": norm(grad_atba), "smooth": norm(grad_smooth), "hinge_active": active}


def measure(config, run_dir: str, params, batches: int) -> dict[str, float]:
  """Mean gradient norms over the first `batches` training batches of epoch 0's order."""
  data = train.load_data(config, run_dir)
  method = base.make_method(config, data.label_map.names)
  norms = jax.jit(functools.partial(gradient_norms, method))
  rows = []
  for i in range(min(batches, data.train_pipeline.num_batches_per_epoch)):
    batch = {k: jnp.asarray(v) for k, v in data.train_pipeline.batch(0, i).items()}
    rows.append({k: float(v) for k, v in norms(params, batch, jax.random.key(1000 + i)).items()})
  out = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
  out["ratio"] = config.smooth_weight * out["smooth"] / max(out["atba"], 1e-30)
  out["unweighted_ratio"] = out["smooth"] / max(out["atba"], 1e-30)
  return out


def run_weight(sizes, level: float, seed: int, weight: float, workdir: str, every: int, batches: int) -> dict:
  tag = f"_ls{weight:g}"
  run_dir = os.path.join(workdir, "runs", hal_evidence.run_name(level, seed, "full", tag))
  result_path = os.path.join(run_dir, "result.json")
  if os.path.isfile(result_path):
    with open(result_path, encoding="utf-8") as f:
      return json.load(f)
  data_dir = synthetic.ensure_generated(os.path.join(workdir, "data", f"d{level:.2f}_s{seed}"),
                                        hal_evidence.data_config(sizes, level, seed))
  config = hal_evidence.run_config(sizes, "full", seed, data_dir, {"smooth_weight": weight})
  steps_per_epoch = -(-sizes.num_train // config.batch_size)
  stops = [e * steps_per_epoch for e in range(config.stage_epoch, config.num_epochs, every)]
  trace_path = os.path.join(run_dir, "gradients.jsonl")
  trace = {}
  if os.path.isfile(trace_path):
    trace = {r["step"]: r for r in map(json.loads, formats.read_text(trace_path).splitlines())}
  for stop in stops:
    if stop in trace:
      continue
    latest = checkpoint_lib.Checkpointer(os.path.join(run_dir, "checkpoints")).latest_step() if os.path.isdir(
        os.path.join(run_dir, "checkpoints")) else None
    if latest is not None and latest > stop:
      continue  # Killed after this stop's checkpoint moved on: its measurement is lost, not faked.
    if latest == stop:
      params = train.restore_trained(config, run_dir)[2]
    else:
      params = train.train_and_evaluate(config, run_dir, stop_after_steps=stop).state.params
    trace[stop] = {"step": stop, "epoch": stop // steps_per_epoch, **measure(config, run_dir, params, batches)}
    formats.write_text_atomic(trace_path, "".join(json.dumps(trace[s]) + "\n" for s in sorted(trace)))
  result = train.train_and_evaluate(config, run_dir)
  final = {"step": result.steps, "epoch": config.num_epochs, **measure(config, run_dir, result.state.params, batches)}
  record = {**{k: float(v) for k, v in result.eval_metrics.items()}, "level": level, "seed": seed, "weight": weight,
            "epochs": config.num_epochs, "trace": [trace[s] for s in sorted(trace)] + [final]}
  write_json_atomic(result_path, record)
  return record


def table(records: list[dict]) -> str:
  lines = [("| w (L_s weight) | MoF | Edit | F1@50 | IoU | MCC action (read-out / direct) | w‖∇L_s‖ / ‖∇L_ATBA‖ at "
            "the stage switch → end | ‖∇L_s‖ / ‖∇L_ATBA‖ (unweighted) | hinge active |"),
           "|---|---|---|---|---|---|---|---|---|"]
  for r in sorted(records, key=lambda r: r["weight"]):
    ratios = " → ".join(f"{t['ratio']:.1e}" for t in r["trace"])
    unweighted = statistics.mean(t["unweighted_ratio"] for t in r["trace"])
    active = statistics.mean(t["hinge_active"] for t in r["trace"])
    lines.append(f"| {r['weight']:g} | {r['mof']:.1f} | {r['edit']:.1f} | {r['f1@50']:.1f} | {r['iou']:.1f} | "
                 f"{r['mcc_action']:.1f} / {r['mcc_action_direct']:.1f} | {ratios} | {unweighted:.2f} | "
                 f"{100 * active:.0f} % |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--level", type=float, default=0.5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--weights", default="0.001,0.01,0.1,1")
  parser.add_argument("--every", type=int, default=4, help="epochs between measurements in stage 1")
  parser.add_argument("--batches", type=int, default=2, help="training batches per measurement")
  parser.add_argument("--preset", default="default")
  parser.add_argument("--config_preset", default="synthetic")
  parser.add_argument("--num_train", type=int, default=40)
  parser.add_argument("--num_test", type=int, default=20)
  parser.add_argument("--epochs", type=int, default=16)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--workdir", default="/tmp/hal_evidence")
  parser.add_argument("--out", default="")
  parser.add_argument("--report_only", action="store_true", help="train nothing: report the finished weights")
  args = parser.parse_args(argv)
  sizes = hal_evidence.Sizes(args.preset, args.num_train, args.num_test, args.epochs, args.batch_size,
                             args.config_preset)
  records = []
  for weight in (float(w) for w in args.weights.split(",")):
    run_dir = os.path.join(args.workdir, "runs", hal_evidence.run_name(args.level, args.seed, "full", f"_ls{weight:g}"))
    if args.report_only and not os.path.isfile(os.path.join(run_dir, "result.json")):
      continue
    record = run_weight(sizes, args.level, args.seed, weight, args.workdir, args.every, args.batches)
    records.append(record)
    print(json.dumps({k: record[k] for k in ("weight", "mof", "edit", "f1@50")} |
                     {"ratio": [t["ratio"] for t in record["trace"]]}), flush=True)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    formats.write_text_atomic(os.path.join(args.out, "smooth.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
    formats.write_text_atomic(os.path.join(args.out, "smooth.md"), table(records))
  return records


if __name__ == "__main__":
  main()
