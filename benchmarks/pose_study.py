r"""The gain of the pose term over its host: loss=none vs loss=filtered (and vanilla), offline and online, paired.

  nice -n 10 python benchmarks/pose_study.py --seeds=0,1,2 --modes=offline,online --losses=none,filtered \
      --vanilla_modes=online --pose_inputs=online:concat:filtered,offline:pose:none --workdir=/tmp/pose_study \
      --out=/tmp/pose_study/out

For every seed s it generates a reduced synthetic data set with poses (`hal_jax.data.synthetic` preset `pose` with
seed s: `--num_train` / `--num_test` videos, segment lengths from `--duration_range`) once, then trains
``configs/pose.py:synthetic,loss=L,mode=M`` on it with training seed s for every mode M and loss L (`vanilla` only at
`--vanilla_modes`: Table 3's unfiltered negatives, δ = 0), and for every `mode:input[:loss]` of `--pose_inputs` a
host reading pose embeddings at training and test (``loss=L,input=I``, L none unless given: Table 5's concatenated
pose, trained with the method's loss in the paper, and Table 6's pose alone). The runs of one (seed, mode) see the
same videos and the same seed, so their difference is paired. It prints one JSON line per run (the paper's
metrics: acc = MoF, iou_pred, Edit, F1@50) and writes

  <out>/runs.jsonl   one line per finished run (all evaluation metrics, run_seconds, sizes)
  <out>/table.md     mean ± std over seeds of every (mode, loss, input), and the paired differences filtered − none,
                     filtered − vanilla, offline − online (loss none), concat/pose input − rgb (same loss) and
                     filtered − concat input, each with a 95 % t interval and a verdict

Resumable: each run lives in <workdir>/runs/s<seed>_<mode>_<loss>[_<input>]/ and is finished once its result.json
(the final metrics) exists; a re-run with the same flags skips finished runs and resumes an interrupted one from its
checkpoint.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
import hal_evidence
from configs import pose as pose_config
from hal_jax import train
from hal_jax.data import formats
from hal_jax.data import synthetic
from hal_jax.metric_writer import write_json_atomic
# pylint: enable=wrong-import-position

# (key in the evaluation metrics, the paper's column name); all on a 0-100 scale.
METRICS = (("mof", "acc (MoF)"), ("iou_pred", "IoU (iou_pred)"), ("edit", "Edit"), ("f1@50", "F1@50"))


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What every run of a sweep shares: the data preset and its sizes, the config preset and its overrides."""
  data_preset: str
  num_train: int
  num_test: int
  duration_range: tuple[int, int]
  background_duration: int
  config_preset: str
  epochs: int  # 0: the config preset's.
  bucket_multiple: int
  max_positions: int
  host: str = "atba"


def data_config(sizes: Sizes, seed: int) -> synthetic.SegmentationConfig:
  return dataclasses.replace(synthetic.PRESETS[sizes.data_preset], seed=seed, num_train=sizes.num_train,
                             num_test=sizes.num_test, duration_range=sizes.duration_range,
                             background_duration=sizes.background_duration)


def run_config(sizes: Sizes, mode: str, loss: str, seed: int, data_dir: str, pose_input: str = "rgb"):
  config = pose_config.get_config(
      f"{sizes.config_preset},host={sizes.host},loss={loss},mode={mode},input={pose_input}")
  with config.unlocked():
    config.data_dir = data_dir
    config.seed = seed
    config.progress = False
    config.tensorboard = False
    config.bucket_multiple = sizes.bucket_multiple
    # The positional table must cover the longest video: the requested size, or the next bucket multiple.
    needed = -(-hal_evidence.longest_video(data_dir) // config.sample_rate)
    config.max_positions = max(sizes.max_positions, -(-needed // sizes.bucket_multiple) * sizes.bucket_multiple)
    if sizes.epochs:
      scale = sizes.epochs / config.num_epochs  # The stage switch and warm-up keep their fraction of the run.
      config.stage_epoch = max(1, round(config.stage_epoch * scale))
      config.warmup_epochs = max(1, min(config.stage_epoch, round(config.warmup_epochs * scale)))
      config.num_epochs = sizes.epochs
    config.eval_every_epochs = config.num_epochs  # Only the final state is reported (no selection).
  return config


def run_name(seed: int, mode: str, loss: str, pose_input: str = "rgb") -> str:
  return f"s{seed}_{mode}_{loss}" + ("" if pose_input == "rgb" else f"_{pose_input}")


def run_one(sizes: Sizes, seed: int, mode: str, loss: str, workdir: str, pose_input: str = "rgb") -> dict:
  """Trains and evaluates one run, or returns its stored result when it already finished."""
  run_dir = os.path.join(workdir, "runs", run_name(seed, mode, loss, pose_input))
  result_path = os.path.join(run_dir, "result.json")
  if os.path.isfile(result_path):
    with open(result_path, encoding="utf-8") as f:
      return json.load(f)
  data_dir = synthetic.ensure_generated(os.path.join(workdir, "data", f"s{seed}"), data_config(sizes, seed))
  config = run_config(sizes, mode, loss, seed, data_dir, pose_input)
  started = time.perf_counter()
  result = train.train_and_evaluate(config, run_dir)
  if "mof" not in result.eval_metrics:  # Stopped by a signal before the end (checkpoint saved): not finished.
    raise SystemExit(f"{run_dir}: stopped at step {result.steps}; re-run the same command to resume")
  record = {**{k: float(v) for k, v in result.eval_metrics.items()}, "seed": seed, "mode": mode, "loss": loss,
            "input": pose_input,
            "run_seconds": time.perf_counter() - started, "epochs": config.num_epochs, "steps": result.steps,
            **{k: v for k, v in dataclasses.asdict(sizes).items() if k != "epochs"},
            "duration_range": list(sizes.duration_range)}  # As result.json gives it back.
  write_json_atomic(result_path, record)
  return record


def _mean_std(values: list[float]) -> str:
  """Mean ± std of the defined values (a metric is NaN where undefined, e.g. iou_pred without a predicted segment)."""
  defined = [v for v in values if not math.isnan(v)]
  note = "" if len(defined) == len(values) else f" ({len(defined)} of {len(values)} defined)"
  if len(defined) <= 1:
    return (f"{defined[0]:.1f}" if defined else "undefined") + note
  return f"{statistics.mean(defined):.1f} ± {statistics.stdev(defined):.1f}" + note


def _variant(record: dict) -> tuple[str, str, str]:
  """(mode, loss, input) of a run (records written before inputs existed read rgb)."""
  return record["mode"], record["loss"], record.get("input", "rgb")


def paired(records: list[dict], a: tuple[str, str, str], b: tuple[str, str, str], key: str) -> list[float]:
  """[a − b per seed] of `key` over the seeds where both (mode, loss, input) runs finished with `key` defined."""
  by_run = {(r["seed"], *_variant(r)): r for r in records}
  differences = [by_run[(seed, *a)][key] - by_run[(seed, *b)][key]
                 for seed in sorted({r["seed"] for r in records}) if (seed, *a) in by_run and (seed, *b) in by_run]
  return [d for d in differences if not math.isnan(d)]


def table(records: list[dict]) -> str:
  """Markdown: the mean ± std of every (mode, loss, input), then the paired differences with 95 % intervals."""
  runs = sorted({_variant(r) for r in records}, key=lambda v: (v[0] != "offline", v[2] != "rgb", v[1], v[2]))
  lines = ["| mode | loss | input | seeds | " + " | ".join(title for _, title in METRICS) + " |",
           "|---|---|---|---|" + "---|" * len(METRICS)]
  for variant in runs:
    chosen = [r for r in records if _variant(r) == variant]
    lines.append(f"| {' | '.join(variant)} | {len(chosen)} | " +
                 " | ".join(_mean_std([r[key] for r in chosen]) for key, _ in METRICS) + " |")
  modes = ("offline", "online")
  rgb = lambda mode, loss: (mode, loss, "rgb")
  comparisons = [(f"{m}: filtered − none", rgb(m, "filtered"), rgb(m, "none")) for m in modes]
  comparisons += [(f"{m}: vanilla − none", rgb(m, "vanilla"), rgb(m, "none")) for m in modes]
  comparisons += [(f"{m}: filtered − vanilla", rgb(m, "filtered"), rgb(m, "vanilla")) for m in modes]
  comparisons += [(f"offline − online (loss {loss})", rgb("offline", loss), rgb("online", loss))
                  for loss in ("none", "filtered")]
  comparisons += [(f"{m}: input {i} − rgb (loss {loss})", (m, loss, i), rgb(m, loss))
                  for m in modes for i in ("concat", "pose") for loss in ("none", "filtered")]
  comparisons += [(f"{m}: filtered − input concat (loss {loss})", rgb(m, "filtered"), (m, loss, "concat"))
                  for m in modes for loss in ("none", "filtered")]
  lines += ["", "| paired difference | n | " + " | ".join(title for _, title in METRICS) + " |",
            "|---|---|" + "---|" * len(METRICS)]
  for name, a, b in comparisons:
    diffs = {key: paired(records, a, b, key) for key, _ in METRICS}
    if not diffs["mof"]:
      continue
    cells = []
    for key, _ in METRICS:
      if not diffs[key]:
        cells.append("undefined")
        continue
      mean, half = hal_evidence.paired_interval(diffs[key])
      ci = "" if math.isnan(half) else f" [{mean - half:+.1f}, {mean + half:+.1f}]"
      n = "" if len(diffs[key]) == len(diffs["mof"]) else f" (n = {len(diffs[key])})"
      cells.append(f"{mean:+.1f}{ci} {hal_evidence.verdict(mean, half)}{n}")
    lines.append(f"| {name} | {len(diffs['mof'])} | " + " | ".join(cells) + " |")
  lines.append("\nDifferences: mean over seeds [95 % t interval]; 'helps' / 'hurts': the interval excludes 0, "
               "'noise': it contains 0.")
  return "\n".join(lines) + "\n"


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--modes", default="offline,online")
  parser.add_argument("--losses", default="none,filtered", help="of none, filtered, vanilla")
  parser.add_argument("--vanilla_modes", default="", help="modes that also run loss=vanilla (Table 3)")
  parser.add_argument("--pose_inputs", default="",
                      help="mode:input[:loss] (input concat or pose; loss none unless given) that also run "
                      "loss=L,input=I (Tables 5-6)")
  parser.add_argument("--data_preset", default="pose", help="synthetic preset with poses")
  parser.add_argument("--config_preset", default="synthetic", help="the configs/pose.py preset")
  parser.add_argument("--host", default="atba", choices=("atba", "hal"), help="the transcript-supervised host")
  parser.add_argument("--num_train", type=int, default=48)
  parser.add_argument("--num_test", type=int, default=24)
  parser.add_argument("--duration_range", default="20,100", help="per-class mean segment length, raw frames")
  parser.add_argument("--background_duration", type=int, default=20)
  parser.add_argument("--epochs", type=int, default=0, help="0: the config preset's")
  parser.add_argument("--bucket_multiple", type=int, default=128)
  parser.add_argument("--max_positions", type=int, default=128)
  parser.add_argument("--workdir", default="/tmp/pose_study")
  parser.add_argument("--out", default="", help="folder for runs.jsonl and table.md")
  parser.add_argument("--report_only", action="store_true", help="train nothing: report the finished runs")
  return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
  args = parse_args(argv)
  low, high = (int(x) for x in args.duration_range.split(","))
  sizes = Sizes(args.data_preset, args.num_train, args.num_test, (low, high), args.background_duration,
                args.config_preset, args.epochs, args.bucket_multiple, args.max_positions, args.host)
  seeds = [int(s) for s in args.seeds.split(",")]
  # Seed-major, Table 3's vanilla runs last: an interrupted sweep has complete pairs for the seeds it reached.
  runs = [(seed, mode, loss, "rgb") for seed in seeds for mode in args.modes.split(",")
          for loss in args.losses.split(",")]
  runs += [(seed, mode, "vanilla", "rgb") for seed in seeds for mode in args.vanilla_modes.split(",") if mode]
  inputs = [(pair + ":none").split(":")[:3] for pair in args.pose_inputs.split(",") if pair]
  runs += [(seed, mode, loss, pose_input) for seed in seeds for mode, pose_input, loss in inputs]
  records = []
  for seed, mode, loss, pose_input in dict.fromkeys(runs):
    finished = os.path.isfile(os.path.join(args.workdir, "runs", run_name(seed, mode, loss, pose_input),
                                           "result.json"))
    if args.report_only and not finished:
      continue
    record = run_one(sizes, seed, mode, loss, args.workdir, pose_input)
    records.append(record)
    print(json.dumps({k: record.get(k, "rgb") for k in ("seed", "mode", "loss", "input", "run_seconds",
                                                        *dict(METRICS))}), flush=True)
  text = table(records) if records else ""
  print(text)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    formats.write_text_atomic(os.path.join(args.out, "runs.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
    formats.write_text_atomic(os.path.join(args.out, "table.md"), text)
  return records


if __name__ == "__main__":
  main()
