r"""H-CLIP study on the synthetic test beds: flat vs full over seeds, then zero- and few-shot transfer to new leaves.

  python benchmarks/hclip_study.py variants --seeds=0,1,2 [--variants=flat,full] [--preset=synthetic|fma] \
      [--workdir=/tmp/hclip_study]
  python benchmarks/hclip_study.py shots --seeds=0,1,2 [--draws=5] [--shots=1,2,4,8] [--workdir=...]

`variants`: ``python -m hal_jax.main --config=configs/hclip.py:PRESET,variant=V --config.seed=S`` for every
variant and seed (in-process, the one training loop); prints one JSON line per run and a Markdown table of mean ± std
of the per-level accuracies with and without the filter, path accuracy, flat consistency and macro-F1.

`shots`: per seed, trains the full model on the seen classes of the preset ``recognition_zero_shot`` (one leaf per
parent held out), then on ``zero_shot/`` (the full taxonomy; its test clips are of the 4 unseen leaves only):
* zero-shot: Acc@C2 of those clips with the candidates restricted to the 4 new leaves, and among all 20 leaves
  (top-down filtered and flat; also Acc@C1);
* k-shot (spec §5): k clips per new leaf drawn from subset ``shots`` (5 draws), all parameters fine-tuned for 100
  AdamW steps at lr 1e-5 (weight decay 0.05), batch min(32, 4k), then the same accuracies.
Prints one JSON line per measurement and a Markdown table of mean ± std (over seeds, and over seeds x draws).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "hal_jax_jit"))

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import optax  # pylint: disable=wrong-import-position

from configs import hclip as hclip_config  # pylint: disable=wrong-import-position
from hal_jax import inference  # pylint: disable=wrong-import-position
from hal_jax import sharding  # pylint: disable=wrong-import-position
from hal_jax import train  # pylint: disable=wrong-import-position
from hal_jax.data import recognition_formats as rf  # pylint: disable=wrong-import-position
from hal_jax.data import recognition_pipeline  # pylint: disable=wrong-import-position
from hal_jax.methods import base  # pylint: disable=wrong-import-position
from hal_jax.tasks import recognition  # pylint: disable=wrong-import-position

VARIANT_METRICS = ("acc_l1", "acc_l2", "acc_l2_flat", "acc_l2_joint", "path_acc", "path_acc_flat",
                   "consistency_flat", "macro_f1", "macro_f1_flat")
FEW_SHOT_STEPS, FEW_SHOT_LR, FEW_SHOT_DECAY = 100, 1e-5, 0.05


def _config(arg: str, seed: int, **overrides):
  config = hclip_config.get_config(arg)
  with config.unlocked():
    config.seed = seed
    config.progress = False
    config.tensorboard = False
    config.update(overrides)
  return config


def _mean_std(values: list[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.1f}"
  return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def variants(args) -> None:
  rows = []
  for variant in args.variants.split(","):
    for seed in args.seed_list:
      config = _config(f"{args.preset},variant={variant}", seed)
      started = time.perf_counter()
      result = train.train_and_evaluate(config, os.path.join(args.workdir, f"{args.preset}_{variant}_seed{seed}"))
      row = {"preset": args.preset, "variant": variant, "seed": seed, "seconds": time.perf_counter() - started,
             **{k: result.eval_metrics[k] for k in VARIANT_METRICS + ("score_mae",) if k in result.eval_metrics}}
      print(json.dumps(row), flush=True)
      rows.append(row)
  print(f"\n| variant | {' | '.join(VARIANT_METRICS)} |\n|---|{'---|' * len(VARIANT_METRICS)}")
  for variant in args.variants.split(","):
    runs = [r for r in rows if r["variant"] == variant]
    print(f"| {variant} | " + " | ".join(_mean_std([r[k] for r in runs]) for k in VARIANT_METRICS) + " |")


def _accuracies(method, params, data, mesh, new_leaves: np.ndarray) -> dict[str, float]:
  """Acc@C1 and Acc@C2 of the test clips: the arg-max among the new leaves only (no filter; the preset holds out
  one leaf per parent, so the filter would leave one candidate), the top-down filtered and the flat arg-max among
  all leaves."""
  labels, filtered, flat, new = [], [], [], []
  for batch, outputs in inference.predict_batches(method, params, data.test_pipeline, mesh):
    rows = np.flatnonzero(batch["batch_mask"])
    labels.append(batch["labels"][rows])
    filtered.append(np.asarray(outputs["filtered"])[rows])
    flat.append(np.asarray(outputs["flat"])[rows, 1])
    log_p2 = np.asarray(outputs["log_probs_l2"])[rows]
    new.append(new_leaves[np.argmax(log_p2[:, new_leaves], axis=1)])
  labels, filtered, flat, new = (np.concatenate(a) for a in (labels, filtered, flat, new))
  return {"acc_l1": 100 * float(np.mean(filtered[:, 0] == labels[:, 0])),
          "acc_l2_new": 100 * float(np.mean(new == labels[:, 1])),
          "acc_l2_all": 100 * float(np.mean(filtered[:, 1] == labels[:, 1])),
          "acc_l2_all_flat": 100 * float(np.mean(flat == labels[:, 1]))}


def _fine_tune(method, params, clips: rf.RecognitionDataset, seed: int):
  """FEW_SHOT_STEPS AdamW steps on `clips` (spec §5), batches of min(32, len(clips)) in a seeded order."""
  batch_size = min(32, len(clips.videos))
  pipeline = recognition_pipeline.RecognitionPipeline(clips, batch_size=batch_size, train=True, seed=seed,
                                                      num_frames=method.config.num_frames, num_devices=1)
  tx = optax.adamw(FEW_SHOT_LR, weight_decay=FEW_SHOT_DECAY)

  @jax.jit
  def step(params, opt_state, batch, index):
    grads = jax.grad(lambda p: method.loss(p, batch, jax.random.fold_in(jax.random.key(seed), index), 0)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  per_epoch = pipeline.num_batches_per_epoch
  for index in range(FEW_SHOT_STEPS):
    batch = pipeline.batch(*divmod(index, per_epoch))
    params, opt_state = step(params, opt_state, batch, index)
  return params


def shots(args) -> None:
  rows = []
  mesh = sharding.make_mesh(jax.devices()[:1])
  for seed in args.seed_list:
    workdir = os.path.join(args.workdir, f"zero_shot_seed{seed}")
    config = _config("synthetic", seed, synthetic_preset="recognition_zero_shot")
    started = time.perf_counter()
    seen = train.train_and_evaluate(config, workdir)
    print(json.dumps({"seed": seed, "trained_s": time.perf_counter() - started,
                      **{f"seen_{k}": seen.eval_metrics[k] for k in ("acc_l1", "acc_l2", "path_acc")}}), flush=True)
    zero_config = _config("synthetic", seed, data_dir=os.path.join(workdir, "data", "zero_shot"))
    data = recognition.load(zero_config, workdir)
    method = base.make_method(zero_config, data.label_map.names)
    taxonomy = data.taxonomy
    new_leaves = np.unique(data.test.labels[:, 1])
    row = {"seed": seed, "k": 0, "draw": 0, **_accuracies(method, seen.state.params, data, mesh, new_leaves)}
    print(json.dumps(row), flush=True)
    rows.append(row)
    pool = rf.load_directory(data.data_dir)[1]["shots"]
    by_leaf = {leaf: [c for c in pool.videos if c.labels[1] == leaf] for leaf in new_leaves}
    params = jax.device_get(seen.state.params)
    for k in args.shot_list:
      for draw in range(args.draws):
        rng = np.random.default_rng((seed, k, draw))
        picked = tuple(clip for leaf in new_leaves for clip in
                       (by_leaf[leaf][i] for i in rng.choice(len(by_leaf[leaf]), k, replace=False)))
        clips = rf.RecognitionDataset(data.data_dir, "shots", picked, taxonomy)
        tuned = _fine_tune(method, params, clips, seed=1000 * k + draw)
        row = {"seed": seed, "k": k, "draw": draw, **_accuracies(method, tuned, data, mesh, new_leaves)}
        print(json.dumps(row), flush=True)
        rows.append(row)
  print("\n| shots per new leaf | runs | Acc@C1 | Acc@C2 new leaves only | Acc@C2 all leaves, filtered | "
        "Acc@C2 all leaves, flat |\n|---|---|---|---|---|---|")
  for k in [0] + args.shot_list:
    runs = [r for r in rows if r["k"] == k]
    print(f"| {k if k else '0 (zero-shot)'} | {len(runs)} | " + " | ".join(
        _mean_std([r[m] for r in runs]) for m in ("acc_l1", "acc_l2_new", "acc_l2_all", "acc_l2_all_flat")) + " |")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("study", choices=("variants", "shots"))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--variants", default="flat,full")
  parser.add_argument("--preset", default="synthetic", help="variants: the configs/hclip.py preset")
  parser.add_argument("--shots", default="1,2,4,8")
  parser.add_argument("--draws", type=int, default=5)
  parser.add_argument("--workdir", default="/tmp/hclip_study")
  args = parser.parse_args(argv)
  args.seed_list = [int(s) for s in args.seeds.split(",")]
  args.shot_list = [int(s) for s in args.shots.split(",")]
  (variants if args.study == "variants" else shots)(args)


if __name__ == "__main__":
  main()
