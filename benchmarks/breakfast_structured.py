r"""Breakfast-structured HAL vs ATBA: the closest offline analogue of HAL's Table 1, paired over seeds.

  python benchmarks/breakfast_structured.py --seeds=0,1,2 --num_train=128 --num_test=48 --epochs=10 \
      --feature_dim=2048 --workdir=/tmp/breakfast_structured --out=results/breakfast_structured

Per seed s it generates the synthetic preset `breakfast` (hal_jax.data.synthetic: the real split-1 transcripts and
relative durations, length_scale 0.25) with seed s and `--feature_dim`-d features (2048 = I3D-sized), then trains
ATBA and full HAL on it with training seed s, at the paper's hyper-parameters (`configs/atba.py:breakfast`, 6
encoder layers, and `configs/hal.py:breakfast`, 5: hidden 256, batch 32, lr 5e-4, the papers' own settings of Table
1), both from the same data and seed, so their difference is paired. The run sizes it cannot afford are explicit flags:

  --num_train / --num_test   videos drawn (with replacement) from the real split-1 lists; 0 = the whole split
                             (1456 / 252 videos, ~4 MB each at 2048-d)
  --epochs                   0 = the preset's 400; else the stage switch and warm-up keep their fraction of the run
                             (as in benchmarks/hal_evidence.py)

Writes <out>/runs.jsonl (one line per finished run, appended), <out>/<run>/metrics.jsonl (each run's training log)
and <out>/table.md (per method mean ± std, and HAL − ATBA with a 95 % t interval over seeds). Resumable: finished
runs (in runs.jsonl with the same sizes) are skipped, an interrupted one resumes from its last checkpoint in
<workdir>/runs/<run>. A seed's generated data are deleted once both of its runs are finished (--keep_data keeps
them). Prints one JSON summary line at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
import hal_evidence  # Sets the compilation cache and the import path first.

from configs import atba as atba_config

from hal_jax import train
from hal_jax.data import formats
from hal_jax.data import synthetic
# pylint: enable=wrong-import-position

ROWS = ("baseline", "full")
# The sweep's metrics plus MoF-Bg, which the paper's Table 1 reports.
METRICS = hal_evidence.METRICS[:1] + (("mof_bg", "MoF-Bg"),) + hal_evidence.METRICS[1:]


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What every run shares; a runs.jsonl only counts runs made with the same sizes."""
  preset: str
  config_preset: str
  feature_dim: int
  num_train: int  # 0: the whole real split
  num_test: int
  epochs: int  # 0: the config preset's


def data_config(sizes: Sizes, seed: int) -> synthetic.SegmentationConfig:
  base = synthetic.PRESETS[sizes.preset]
  return dataclasses.replace(base, seed=seed, num_train=sizes.num_train or None, num_test=sizes.num_test or None,
                             process=dataclasses.replace(base.process, feature_dim=sizes.feature_dim))


def run_one(sizes: Sizes, seed: int, row: str, workdir: str, out: str) -> dict:
  """Trains and evaluates one run (resuming its checkpoint); its metrics.jsonl is copied to <out>/<run>/."""
  name = f"s{seed}_{row}"
  run_dir = os.path.join(workdir, "runs", name)
  data_dir = synthetic.ensure_generated(os.path.join(workdir, "data", f"s{seed}"), data_config(sizes, seed))
  # ATBA as published (configs/atba.py), not the Table-5 baseline row with HAL's encoder depth; otherwise the two
  # configs are the same keys (configs/hal.py builds on configs/atba.py).
  overrides = {"num_layers": atba_config.get_config(sizes.config_preset).num_layers} if row == "baseline" else None
  config = hal_evidence.run_config(
      hal_evidence.Sizes(sizes.preset, sizes.num_train, sizes.num_test, sizes.epochs, 0, sizes.config_preset),
      row, seed, data_dir, overrides)
  started = time.perf_counter()
  result = train.train_and_evaluate(config, run_dir)
  if "mof" not in result.eval_metrics:  # Stopped by a signal before the end (checkpoint saved): not finished.
    raise SystemExit(f"{run_dir}: stopped at step {result.steps}; re-run the same command to resume")
  os.makedirs(os.path.join(out, name), exist_ok=True)
  shutil.copyfile(os.path.join(run_dir, "metrics.jsonl"), os.path.join(out, name, "metrics.jsonl"))
  return {**{k: float(v) for k, v in result.eval_metrics.items()}, "seed": seed, "row": row,
          "run_seconds": time.perf_counter() - started, "steps": int(result.steps), "epochs": config.num_epochs,
          "stage_epoch": config.stage_epoch, "warmup_epochs": config.warmup_epochs, "batch_size": config.batch_size,
          **dataclasses.asdict(sizes)}


def finished_runs(path: str, sizes: Sizes) -> dict[tuple[int, str], dict]:
  """{(seed, row): record} of the runs in `path` made with `sizes`."""
  if not os.path.isfile(path):
    return {}
  wanted = dataclasses.asdict(sizes)
  records = (json.loads(line) for line in formats.read_text(path).splitlines())
  return {(r["seed"], r["row"]): r for r in records if all(r.get(k) == v for k, v in wanted.items())}


def summary(records: list[dict]) -> dict:
  """Per metric: each method's mean ± std and HAL − ATBA's paired mean and 95 % half-width over the seeds."""
  by_key = {(r["seed"], r["row"]): r for r in records}
  seeds = sorted(s for s, row in by_key if row == "full" and (s, "baseline") in by_key)
  out = {"seeds": seeds}
  for key, _ in METRICS:
    pairs = [(by_key[(s, "baseline")][key], by_key[(s, "full")][key]) for s in seeds]
    if not pairs:
      continue
    entry = {}
    for i, row in enumerate(ROWS):
      values = [p[i] for p in pairs]
      entry[row] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan"))
    entry["difference"] = hal_evidence.paired_interval([b - a for a, b in pairs])
    out[key] = entry
  return out


def table(records: list[dict]) -> str:
  """Markdown: per metric, ATBA and HAL mean ± std and the paired HAL − ATBA [95 % interval] with its verdict."""
  stats = summary(records)
  lines = [f"Seeds {stats['seeds']} (n = {len(stats['seeds'])} pairs; mean ± std over seeds).", "",
           "| metric | ATBA | HAL | HAL − ATBA [95 % interval] |", "|---|---|---|---|"]
  for key, title in METRICS:
    if key not in stats:
      continue
    entry = stats[key]
    mean, half = entry["difference"]
    ci = "" if half != half else f" [{mean - half:+.1f}, {mean + half:+.1f}]"  # NaN half-width: one pair.
    cells = [f"{m:.1f} ± {s:.1f}" for m, s in (entry[row] for row in ROWS)]
    lines.append(f"| {title} | {cells[0]} | {cells[1]} | {mean:+.1f}{ci} {hal_evidence.verdict(mean, half)} |")
  lines.append("")
  lines.append("'helps' / 'hurts': the 95 % t interval over seeds excludes 0; 'noise': it contains 0.")
  return "\n".join(lines) + "\n"


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--preset", default="breakfast", help="the synthetic segmentation preset")
  parser.add_argument("--config_preset", default="breakfast", help="the configs/hal.py preset")
  parser.add_argument("--feature_dim", type=int, default=2048)
  parser.add_argument("--num_train", type=int, default=0, help="0: the whole real split")
  parser.add_argument("--num_test", type=int, default=0, help="0: the whole real split")
  parser.add_argument("--epochs", type=int, default=0, help="0: the config preset's")
  parser.add_argument("--workdir", default="/tmp/breakfast_structured")
  parser.add_argument("--out", default="results/breakfast_structured")
  parser.add_argument("--keep_data", action="store_true", help="keep each seed's generated data")
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  sizes = Sizes(args.preset, args.config_preset, args.feature_dim, args.num_train, args.num_test, args.epochs)
  runs_path = os.path.join(args.out, "runs.jsonl")
  os.makedirs(args.out, exist_ok=True)
  done = finished_runs(runs_path, sizes)
  for seed in (int(s) for s in args.seeds.split(",")):
    for row in ROWS:  # Seed-major: an interrupted study holds complete pairs for the seeds it reached.
      if (seed, row) in done:
        continue
      record = run_one(sizes, seed, row, args.workdir, args.out)
      with open(runs_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
      done[(seed, row)] = record
      print(json.dumps({k: record[k] for k in ("seed", "row", "run_seconds", "mof", "edit", "f1@50")}), flush=True)
    if not args.keep_data and all((seed, row) in done for row in ROWS):
      shutil.rmtree(os.path.join(args.workdir, "data", f"s{seed}"), ignore_errors=True)
  records = list(done.values())
  formats.write_text_atomic(os.path.join(args.out, "table.md"), table(records))
  result = summary(records)
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
