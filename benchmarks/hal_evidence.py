r"""Where do HAL's latents pay off? ATBA vs HAL over the synthetic difficulty axis, paired, with 95 % intervals.

  python benchmarks/hal_evidence.py --levels=0,0.25,0.5,0.75,1 --seeds=0,1,2,3,4 --rows=baseline,full \
      --workdir=/tmp/hal_evidence --out=results/evidence

For every difficulty level d (`hal_jax.data.synthetic_difficulty`) and seed s it generates the data set
`at_difficulty(<base preset> with seed s, d)` once, then trains each HAL Table-5 row (`configs/hal.py:synthetic,
ablation=ROW`, `baseline` = ATBA with HAL's encoder depth) on it with training seed s: the rows of one (d, s) see the
same videos and the same seed, so their difference is paired. It writes

  <out>/runs.jsonl        one line per finished run (all metrics, seconds, epochs)
  <out>/table.md          per level: each row's mean, and the paired difference to `baseline` with a 95 % interval
  <out>/differences.png   the paired difference vs difficulty, one panel per metric, with the intervals
  <out>/calibration.md    (with --calibrate) per level: the linear probe, the majority class and `baseline`'s MoF

Resumable: each run lives in <workdir>/runs/d<level>_s<seed>_<row>/ (its metrics.jsonl and checkpoints are kept) and
is finished once its result.json exists; a killed sweep re-run with the same flags skips finished runs and resumes
the interrupted one from its last checkpoint. Run sizes (`--num_train`, `--num_test`, `--epochs`, `--batch_size`)
are part of every run's config, so a sweep is only resumed with the same sizes (the workdir refuses others).
`--stored=<earlier out>/runs.jsonl` extends a sweep whose workdir is gone: a run recorded there with the same sizes
counts as finished and is reported, not trained again (a finished run in the workdir still comes first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "hal_jax_jit"))

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import numpy as np
from scipy import stats

from configs import hal as hal_config
from hal_jax import train
from hal_jax.data import formats
from hal_jax.data import synthetic
from hal_jax.data import synthetic_difficulty
from hal_jax.metric_writer import write_json_atomic
# pylint: enable=wrong-import-position

ROW_NAMES = {"baseline": "ATBA", "rec_only": "+ L_r only", "smooth_only": "+ L_s only", "kl_only": "+ L_KL only",
             "delta_only": "+ δ term only", "full": "HAL"}
# (key in the evaluation metrics, column title); all on a 0-100 scale.
METRICS = (("mof", "MoF"), ("iou", "IoU"), ("iod", "IoD"), ("iou_tasl", "IoU (TASL)"), ("iod_tasl", "IoD (TASL)"),
           ("edit", "Edit"), ("f1@10", "F1@10"), ("f1@25", "F1@25"), ("f1@50", "F1@50"),
           ("mcc_action", "MCC action (read-out)"), ("mcc_visual", "MCC visual (read-out)"),
           ("mcc_action_direct", "MCC action (direct)"), ("mcc_visual_direct", "MCC visual (direct)"))


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What every run of a sweep shares: the base preset, its video counts and the training length."""
  preset: str
  num_train: int
  num_test: int
  epochs: int
  batch_size: int
  config_preset: str  # configs/hal.py preset


def data_config(sizes: Sizes, level: float, seed: int) -> synthetic.SegmentationConfig:
  base = dataclasses.replace(synthetic.PRESETS[sizes.preset], seed=seed, num_train=sizes.num_train,
                             num_test=sizes.num_test)
  return synthetic_difficulty.at_difficulty(base, level)


def longest_video(data_dir: str) -> int:
  """Frames of the longest video of a synthetic data set (its videos.tsv)."""
  rows = formats.read_text(os.path.join(data_dir, "videos.tsv")).splitlines()[1:]
  return max(int(row.split("\t")[3]) for row in rows)


def run_config(sizes: Sizes, row: str, seed: int, data_dir: str, overrides: dict | None = None):
  config = hal_config.get_config(f"{sizes.config_preset},ablation={row}")
  with config.unlocked():
    config.data_dir = data_dir
    # The positional table must cover the longest video (ATBA sets it per data set the same way, spec §10): the
    # preset's, or the next multiple of the bucket size when a hard level's duration spread makes longer videos.
    needed = -(-longest_video(data_dir) // config.sample_rate)
    if needed > config.max_positions:
      config.max_positions = -(-needed // config.bucket_multiple) * config.bucket_multiple
    config.seed = seed
    config.progress = False
    config.tensorboard = False
    if sizes.epochs:
      # Keep the preset's stage switch and warm-up at the same fraction of the run.
      scale = sizes.epochs / config.num_epochs
      config.stage_epoch = max(1, round(config.stage_epoch * scale))
      config.warmup_epochs = max(1, min(config.stage_epoch, round(config.warmup_epochs * scale)))
      config.num_epochs = sizes.epochs
    if sizes.batch_size:
      config.batch_size = sizes.batch_size
    config.eval_every_epochs = config.num_epochs
    for key, value in (overrides or {}).items():
      config[key] = value
  return config


def run_name(level: float, seed: int, row: str, tag: str = "") -> str:
  return f"d{level:.2f}_s{seed}_{row}{tag}"


def run_one(sizes: Sizes, level: float, seed: int, row: str, workdir: str, overrides: dict | None = None,
            tag: str = "") -> dict:
  """Trains and evaluates one run, or returns its stored result when it already finished."""
  run_dir = os.path.join(workdir, "runs", run_name(level, seed, row, tag))
  result_path = os.path.join(run_dir, "result.json")
  if os.path.isfile(result_path):
    with open(result_path, encoding="utf-8") as f:
      record = json.load(f)
    if "run_seconds" not in record:  # Written by an early version: the run's span on disk.
      record["run_seconds"] = os.path.getmtime(result_path) - os.path.getmtime(os.path.join(run_dir, "config.json"))
    return record
  data_dir = synthetic.ensure_generated(os.path.join(workdir, "data", f"d{level:.2f}_s{seed}"),
                                        data_config(sizes, level, seed))
  config = run_config(sizes, row, seed, data_dir, overrides)
  started = time.perf_counter()
  result = train.train_and_evaluate(config, run_dir)
  if "mof" not in result.eval_metrics:  # Stopped by a signal before the end (checkpoint saved): not finished.
    raise SystemExit(f"{run_dir}: stopped at step {result.steps}; re-run the same command to resume")
  # "seconds" of the evaluation metrics is the evaluation's own time; run_seconds the whole run's (wall clock).
  record = {**{k: float(v) for k, v in result.eval_metrics.items()}, "level": level, "seed": seed, "row": row,
            "tag": tag, "run_seconds": time.perf_counter() - started, "epochs": config.num_epochs,
            "num_train": sizes.num_train, "num_test": sizes.num_test, "batch_size": config.batch_size}
  write_json_atomic(result_path, record)
  return record


def stored_records(path: str, sizes: Sizes) -> dict[tuple, dict]:
  """{(level, seed, row, tag): record} of a runs.jsonl: the runs made with `sizes` (as far as a record holds them)."""
  out = {}
  for line in formats.read_text(path).splitlines():
    record = json.loads(line)
    same = (record["num_train"], record["num_test"]) == (sizes.num_train, sizes.num_test) and all(
        not wanted or record[key] == wanted for key, wanted in (("epochs", sizes.epochs),
                                                                ("batch_size", sizes.batch_size)))
    if same:
      out[(record["level"], record["seed"], record["row"], record.get("tag", ""))] = record
  return out


def paired_interval(differences: list[float], confidence: float = 0.95) -> tuple[float, float]:
  """Mean and half-width of the t interval of paired differences (half-width NaN for one pair)."""
  mean = statistics.mean(differences)
  if len(differences) < 2:
    return mean, float("nan")
  sem = statistics.stdev(differences) / math.sqrt(len(differences))
  return mean, float(stats.t.ppf(0.5 + confidence / 2, len(differences) - 1) * sem)


def verdict(mean: float, half: float) -> str:
  if math.isnan(half):
    return "one seed"
  if mean - half > 0:
    return "helps"
  if mean + half < 0:
    return "hurts"
  return "noise"


def differences(records: list[dict], row: str, metric: str) -> dict[float, list[float]]:
  """{level: [row − baseline per seed]} over the (level, seed) pairs where both finished."""
  by_key = {(r["level"], r["seed"], r["row"]): r for r in records}
  out: dict[float, list[float]] = {}
  for (level, seed, name), record in sorted(by_key.items()):
    base = by_key.get((level, seed, "baseline"))
    if name == row and base is not None and metric in record and metric in base:
      out.setdefault(level, []).append(record[metric] - base[metric])
  return out


def table(records: list[dict], rows: list[str], metrics=METRICS) -> str:
  """Markdown: per level and metric, the baseline mean and each row's paired difference [95 % interval]."""
  levels = sorted({r["level"] for r in records})
  lines = []
  for row in rows:
    if row == "baseline":
      continue
    lines += [f"**{ROW_NAMES[row]} − ATBA** (paired over seeds; mean [95 % interval], verdict)", "",
              "| metric | " + " | ".join(f"d = {level:g}" for level in levels) + " |",
              "|---|" + "---|" * len(levels)]
    for key, title in metrics:
      diffs = differences(records, row, key)
      cells = []
      for level in levels:
        base = [r[key] for r in records if r["level"] == level and r["row"] == "baseline" and key in r]
        if level not in diffs:
          cells.append("–")
          continue
        mean, half = paired_interval(diffs[level])
        ci = "" if math.isnan(half) else f" [{mean - half:+.1f}, {mean + half:+.1f}]"
        cells.append(f"{statistics.mean(base):.1f} → {mean:+.1f}{ci} {verdict(mean, half)} (n={len(diffs[level])})")
      lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines.append("")
  lines.append("Cells: ATBA's mean at that level → the mean paired difference. 'helps' / 'hurts': the 95 % t interval "
               "excludes 0; 'noise': it contains 0.")
  return "\n".join(lines) + "\n"


def figure(records: list[dict], rows: list[str], path: str, metrics=METRICS) -> None:
  """PNG: paired difference vs difficulty with 95 % intervals, one panel per metric, one line per row."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  columns = 4
  panels = math.ceil(len(metrics) / columns)
  fig = Figure(figsize=(4 * columns, 3 * panels), layout="constrained")
  FigureCanvasAgg(fig)
  for i, (key, title) in enumerate(metrics):
    axis = fig.add_subplot(panels, columns, i + 1)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    for j, row in enumerate(r for r in rows if r != "baseline"):
      diffs = differences(records, row, key)
      levels = sorted(diffs)
      means, halves = zip(*(paired_interval(diffs[level]) for level in levels)) if levels else ((), ())
      offset = 0.008 * j  # Side by side when several rows share a panel.
      axis.errorbar(np.array(levels) + offset, means, yerr=np.nan_to_num(halves), marker="o", capsize=3,
                    label=f"{ROW_NAMES[row]} − ATBA")
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("difficulty")
    if i == 0:
      axis.legend(fontsize=7)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temporary = os.path.join(directory, f".tmp-{os.getpid()}.png")
  fig.savefig(temporary, format="png", dpi=90)
  os.replace(temporary, path)


def calibration(records: list[dict], sizes: Sizes, workdir: str) -> str:
  """Markdown: per level, the probe / majority calibration of seed 0's data beside the baseline's MoF."""
  lines = ["| difficulty | ATBA MoF (seeds) | linear probe (supervised) | majority | probe in bursts | sharing |",
           "|---|---|---|---|---|---|"]
  for level in sorted({r["level"] for r in records}):
    seeds = sorted(r["seed"] for r in records if r["level"] == level and r["row"] == "baseline")
    mofs = [r["mof"] for r in records if r["level"] == level and r["row"] == "baseline"]
    config = data_config(sizes, level, seeds[0])
    cal = synthetic.calibrate(synthetic.ensure_generated(os.path.join(workdir, "data", f"d{level:.2f}_s{seeds[0]}"),
                                                         config))
    spread = f" ± {statistics.stdev(mofs):.1f}" if len(mofs) > 1 else ""
    lines.append(f"| {level:g} | {statistics.mean(mofs):.1f}{spread} ({len(mofs)}) | {100 * cal.probe_accuracy:.1f} | "
                 f"{100 * cal.majority_accuracy:.1f} | {100 * cal.burst_accuracy:.1f} | "
                 f"{synthetic_difficulty.sharing(config):.1f} |")
  return "\n".join(lines) + "\n"


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--levels", default="0,0.25,0.5,0.75,1")
  parser.add_argument("--seeds", default="0,1,2,3,4")
  parser.add_argument("--rows", default="baseline,full", help="configs/hal.py ablation rows; baseline is required")
  parser.add_argument("--preset", default="default", help="the base synthetic segmentation preset")
  parser.add_argument("--config_preset", default="synthetic", help="the configs/hal.py preset")
  parser.add_argument("--num_train", type=int, default=40)
  parser.add_argument("--num_test", type=int, default=20)
  parser.add_argument("--epochs", type=int, default=16, help="0: the config preset's")
  parser.add_argument("--batch_size", type=int, default=8, help="0: the config preset's")
  parser.add_argument("--workdir", default="/tmp/hal_evidence")
  parser.add_argument("--out", default="", help="folder for runs.jsonl, table.md, differences.png")
  parser.add_argument("--stored", default="", help="an earlier sweep's runs.jsonl: its runs of the same sizes count "
                      "as finished")
  parser.add_argument("--calibrate", action="store_true", help="also write calibration.md")
  parser.add_argument("--report_only", action="store_true",
                      help="train nothing: report the runs of --levels x --seeds x --rows that have finished")
  return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
  args = parse_args(argv)
  rows = args.rows.split(",")
  if "baseline" not in rows:
    raise SystemExit("--rows must include baseline (the differences are taken to it)")
  sizes = Sizes(args.preset, args.num_train, args.num_test, args.epochs, args.batch_size, args.config_preset)
  stored = stored_records(args.stored, sizes) if args.stored else {}
  records = []
  # Seed-major, then level, then row: an interrupted sweep has complete pairs at every level for the seeds it reached.
  for seed in (int(s) for s in args.seeds.split(",")):
    for level in (float(x) for x in args.levels.split(",")):
      for row in rows:
        finished = os.path.isfile(os.path.join(args.workdir, "runs", run_name(level, seed, row), "result.json"))
        earlier = None if finished else stored.get((level, seed, row, ""))
        if args.report_only and not finished and earlier is None:
          continue
        record = earlier or run_one(sizes, level, seed, row, args.workdir)
        records.append(record)
        print(json.dumps({k: record[k] for k in ("level", "seed", "row", "run_seconds", "mof", "edit", "f1@50")}),
              flush=True)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    formats.write_text_atomic(os.path.join(args.out, "runs.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
    if len(rows) > 1:
      formats.write_text_atomic(os.path.join(args.out, "table.md"), table(records, rows))
      figure(records, rows, os.path.join(args.out, "differences.png"))
    if args.calibrate:
      formats.write_text_atomic(os.path.join(args.out, "calibration.md"), calibration(records, sizes, args.workdir))
  return records


if __name__ == "__main__":
  main()
