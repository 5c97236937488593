r"""Reproduction study of HAL's ablation table (HAL Table 5) on the synthetic default: every row x several seeds.

  python benchmarks/ablation.py --seeds=0,1,2 --out=RESULTS_ablation.md [--workdir=/tmp/hal_ablation]

Each run is `python -m hal_jax.main --config=configs/hal.py:synthetic,ablation=ROW --config.seed=S` (in-process).
Prints one JSON line per run, then writes a Markdown table of mean ± std over seeds of MoF, MoF-Bg, IoU, IoD, Edit,
F1@50 and the latent MCCs beside the paper's Breakfast split-1 numbers, followed by the orderings that did and did
not reproduce. `--epochs` shortens every run (the table says so).
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

from configs import hal as hal_config  # pylint: disable=wrong-import-position
from hal_jax import train  # pylint: disable=wrong-import-position

ROWS = ("baseline", "rec_only", "smooth_only", "kl_only", "delta_only", "full")
ROW_NAMES = {"baseline": "baseline (ATBA)", "rec_only": "+ L_r only", "smooth_only": "+ L_s only",
             "kl_only": "+ L_KL only", "delta_only": "+ δ term only", "full": "full HAL"}
# HAL Table 5 (Breakfast split 1), from public summaries of the paper (spec hal_atba.md §11): MoF, IoU, IoD.
PAPER = {"baseline": (53.3, 40.1, 58.7), "rec_only": (54.3, 38.4, 61.6), "smooth_only": (54.6, 40.3, 61.6),
         "kl_only": (54.5, 42.0, 61.0), "delta_only": (53.9, 41.1, 59.4), "full": (56.6, 42.6, 62.1)}
METRICS = ("mof", "mof_bg", "iou", "iod", "iou_tasl", "edit", "f1@50", "mcc_action", "mcc_visual",
           "mcc_action_direct", "mcc_visual_direct")


def run(row: str, seed: int, workdir: str, epochs: int | None) -> dict:
  config = hal_config.get_config(f"synthetic,ablation={row}")
  with config.unlocked():
    config.seed = seed
    config.progress = False
    config.tensorboard = False
    if epochs:
      config.num_epochs = epochs
      config.eval_every_epochs = epochs
  started = time.perf_counter()
  result = train.train_and_evaluate(config, os.path.join(workdir, f"{row}_seed{seed}"))
  return {"row": row, "seed": seed, "seconds": time.perf_counter() - started, "epochs": config.num_epochs,
          **{k: result.eval_metrics.get(k, float("nan")) for k in METRICS}}


def mean_std(values: list[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.1f}"
  return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def orderings(results: dict[str, list[dict]]) -> list[str]:
  """Plain statements comparing each row with the baseline on MoF, IoU and IoD, as in the paper."""
  lines = []
  base = {m: statistics.mean(r[m] for r in results["baseline"]) for m in ("mof", "iou", "iod")}
  for row in ROWS[1:]:
    if row not in results:
      continue
    ours = {m: statistics.mean(r[m] for r in results[row]) for m in base}
    for i, metric in enumerate(("mof", "iou", "iod")):
      paper_up = PAPER[row][i] > PAPER["baseline"][i]
      our_up = ours[metric] > base[metric]
      verdict = "reproduces" if paper_up == our_up else "does NOT reproduce"
      lines.append(f"- {ROW_NAMES[row]} vs baseline, {metric}: paper {'+' if paper_up else '−'}"
                   f"{abs(PAPER[row][i] - PAPER['baseline'][i]):.1f}, ours {ours[metric] - base[metric]:+.1f} "
                   f"→ {verdict}.")
  return lines


def table(results: dict[str, list[dict]], epochs: int) -> str:
  header = ("| row | seeds | MoF | MoF-Bg | IoU | IoD | IoU (TASL) | Edit | F1@50 | MCC action | MCC visual | "
            "MCC action (direct) | MCC visual (direct) | paper MoF / IoU / IoD |")
  lines = [header, "|" + "---|" * 14]
  for row in ROWS:
    if row not in results:
      continue
    runs = results[row]
    cells = [mean_std([r[m] for r in runs]) for m in METRICS]
    paper = " / ".join(f"{v:.1f}" for v in PAPER[row])
    lines.append(f"| {ROW_NAMES[row]} | {len(runs)} | " + " | ".join(cells) + f" | {paper} |")
  return "\n".join(lines) + f"\n\n({epochs} epochs per run.)\n"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--rows", default=",".join(ROWS))
  parser.add_argument("--epochs", type=int, default=0, help="override num_epochs (0: the preset's)")
  parser.add_argument("--workdir", default="/tmp/hal_ablation")
  parser.add_argument("--out", default="", help="write the Markdown table here")
  args = parser.parse_args(argv)
  results: dict[str, list[dict]] = {}
  epochs = args.epochs
  for row in args.rows.split(","):
    for seed in (int(s) for s in args.seeds.split(",")):
      record = run(row, seed, args.workdir, args.epochs or None)
      epochs = record["epochs"]
      print(json.dumps(record), flush=True)
      results.setdefault(row, []).append(record)
  text = table(results, epochs) + "\n" + "\n".join(orderings(results)) + "\n"
  print(text)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(text)


if __name__ == "__main__":
  main()
