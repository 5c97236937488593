r"""A run report: one self-contained HTML page of a workdir.

  python -m hal_jax.report --workdir=DIR [--out=DIR/report.html] [--videos=6] [--nopredict]

The page holds the config, the final (and, with checkpoint selection, the selected) metrics, the training curves
(loss terms, learning rate, evaluation metrics over steps), identifiability scores when the data has true latents,
and, from the trained model of the workdir (the checkpoint that `--mode=eval` scores): per-video segmentation bars
(ground truth vs prediction), or localization timelines with the best detections and, where the method finds them,
change points; for methods with visual concepts a gallery of the test clips nearest each concept. Every image is an
inline PNG, so the file can be mailed or archived alone. It is written to a temporary name and renamed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from hal_jax import errors
from hal_jax import quiet

REPORT_FILE = "report.html"
# Training-log keys that are not loss terms: they get their own panels (or none).
_LEARNING_RATE = "train/learning_rate"
_NOT_LOSSES = {_LEARNING_RATE, "train/input_wait_fraction"}
_IDENTIFIABILITY_PREFIX = "mcc_"


@dataclasses.dataclass
class Section:
  """One part of the page: a title and its HTML body (already escaped)."""
  title: str
  body: str


def _png_tag(png: bytes, alt: str) -> str:
  data = base64.b64encode(png).decode("ascii")
  return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _figure_tag(figure, alt: str) -> str:
  from hal_jax import plotting  # pylint: disable=g-import-not-at-top  (matplotlib only when plotting)
  return _png_tag(plotting.figure_png(figure), alt)


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
  return str(value)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
  head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
  body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(v))}</td>" for v in row) + "</tr>" for row in rows)
  return f"<table>{head}{body}</table>"


def read_config(workdir: str) -> dict[str, Any]:
  """`<workdir>/config.json`.

  Raises:
    DataError: it is missing or not a JSON object.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise errors.DataError(path, "file not found (is this a workdir of a run?)")
  try:
    with open(path, encoding="utf-8") as file:
      config = json.load(file)
  except json.JSONDecodeError as error:
    raise errors.DataError(path, f"not JSON ({error.msg})") from None
  if not isinstance(config, dict):
    raise errors.DataError(path, "expected a JSON object")
  return config


def read_records(workdir: str) -> list[dict[str, Any]]:
  """The records of `<workdir>/metrics.jsonl` (none when the run logged nothing yet)."""
  from hal_jax import plotting  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "metrics.jsonl")
  return plotting._read_records(path) if os.path.isfile(path) else []  # pylint: disable=protected-access


def last_metrics(records: Sequence[Mapping[str, Any]], prefix: str) -> tuple[int | None, dict[str, Any]]:
  """(step, metrics without `prefix`) of the last record holding keys that start with `prefix`, or (None, {})."""
  for record in reversed(records):
    found = {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}
    if found:
      return record.get("step"), found
  return None, {}


def _numeric(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def metrics_section(records: Sequence[Mapping[str, Any]]) -> list[Section]:
  """Final / selected metrics and identifiability tables."""
  sections = []
  step, final = last_metrics(records, "eval/")
  selected_step, selected = last_metrics(records, "selected/")
  rows = []
  for name in sorted(set(final) | set(selected)):
    if name == "seconds" or name.startswith(_IDENTIFIABILITY_PREFIX):
      continue
    rows.append([name, final.get(name, ""), selected.get(name, "")] if selected else [name, final.get(name, "")])
  if rows:
    header = ["metric", f"last evaluation (step {step})"]
    if selected:
      header.append(f"selected checkpoint (step {selected.get('selected_step', selected_step)})")
    sections.append(Section("Metrics (test split, 0-100)", _table(rows, header)))
  else:
    sections.append(Section("Metrics", "<p>No evaluation in metrics.jsonl yet.</p>"))
  latent = {k: v for k, v in final.items() if k.startswith(_IDENTIFIABILITY_PREFIX)}
  if latent:
    text = ("<p>MCC (0-100) between the true latents of the synthetic data and a linear read-out (fitted on train) "
            "of the method's latents; <code>*_direct</code>: the learned dimensions themselves.</p>")
    sections.append(Section("Identifiability", text + _table(sorted(latent.items()), ["score", f"step {step}"])))
  return sections


def curves_section(records: Sequence[Mapping[str, Any]]) -> Section:
  """Loss terms, learning rate and evaluation metrics over steps, one figure each."""
  from hal_jax import plotting  # pylint: disable=g-import-not-at-top
  keys = sorted({k for r in records for k, v in r.items() if _numeric(v)})
  groups = (
      ("loss terms", [k for k in keys if k.startswith("train/") and k not in _NOT_LOSSES]),
      ("learning rate", [k for k in keys if k == _LEARNING_RATE]),
      ("evaluation metrics", [k for k in keys if k.startswith("eval/") and k != "eval/seconds"]),
  )
  parts = []
  for name, group in groups:
    if group:
      parts.append(f"<h3>{html.escape(name)}</h3>")
      parts.append(_figure_tag(plotting.training_curves_figure(records, group), name))
  return Section("Training curves", "".join(parts) or "<p>No training metrics logged yet.</p>")


# ----------------------------------------------------------------------------------------------------------------------
# Sections from the trained model.


def segmentation_sections(data, pairs, max_videos: int) -> list[Section]:
  """Per-video bars (ground truth vs prediction) for the first `max_videos` test videos."""
  from hal_jax import plotting  # pylint: disable=g-import-not-at-top
  predicted = data.predicted_labels(pairs)
  names = data.label_map.names
  parts = [_figure_tag(plotting.segmentation_figure(video.labels, predicted[video.name], names, title=video.name),
                       f"segmentation of {video.name}")
           for video in data.test.videos[:max_videos]]
  shown = f"<p>{min(max_videos, len(data.test.videos))} of {len(data.test.videos)} test videos.</p>"
  return [Section("Segmentation: ground truth vs prediction", shown + "".join(parts))]


def localization_sections(data, pairs, max_videos: int) -> list[Section]:
  """Per-video timelines: ground-truth segments, the best detections and the method's change points, if any."""
  from hal_jax import plotting  # pylint: disable=g-import-not-at-top
  _, results = data.localize(pairs)
  names = data.label_map.names
  parts = []
  with_change_points = False
  for video in data.test.videos[:max_videos]:
    result = results[video.name]
    change_points = result.get("change_points")
    with_change_points |= change_points is not None
    figure = plotting.localization_figure(
        len(video.features), video.segments * video.feature_fps, video.labels, result["detections"], names,
        change_points=change_points, raw_change_points=result.get("raw_change_points"), title=video.name)
    parts.append(_figure_tag(figure, f"localization of {video.name}"))
  legend = ("; dashed lines: change points after pruning, short ticks above the ground truth: before pruning"
            if with_change_points else "")
  text = (f"<p>{min(max_videos, len(data.test.videos))} of {len(data.test.videos)} test videos, in feature steps. "
          f"Top row: ground truth; below: the best detections (opacity = score){legend}.</p>")
  title = "Localization" + (" and change points" if with_change_points else "")
  return [Section(title, text + "".join(parts))]


def concept_gallery_section(method, params, data, clips_per_concept: int = 6) -> Section | None:
  """For methods whose network scores visual concepts per clip (`concept_logits`): the test clips nearest each
  concept (highest concept probability) with their video, time and ground-truth class; None for other methods."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  model = getattr(method, "model", None)
  if model is None or not hasattr(data.test, "videos") or not data.test.videos:
    return None
  probabilities, where = [], []
  concept_logits = jax.jit(lambda p, x: getattr(model.apply({"params": p}, x), "concept_logits", None))
  for video in data.test.videos:
    logits = concept_logits(params, np.asarray(video.features)[None])  # [1, T, N]
    if logits is None:
      return None
    probabilities.append(np.asarray(jax.nn.softmax(logits[0], axis=-1)))
    steps = np.arange(len(video.features))
    labels = np.full(len(steps), -1)
    for (start, end), label in zip(video.segments * video.feature_fps, video.labels):
      labels[(steps >= np.floor(start)) & (steps < np.ceil(end))] = label
    where.extend((video.name, step / video.feature_fps, label) for step, label in zip(steps, labels))
  probabilities = np.concatenate(probabilities)
  names = data.label_map.names
  rows = []
  for concept in range(probabilities.shape[1]):
    nearest = np.argsort(-probabilities[:, concept], kind="stable")[:clips_per_concept]
    clips = [f"{where[i][0]} @ {where[i][1]:.1f}s ({names[where[i][2]] if where[i][2] >= 0 else 'no action'}, "
             f"p={probabilities[i, concept]:.2f})" for i in nearest]
    classes = [where[i][2] for i in nearest if where[i][2] >= 0]
    purity = 100.0 * max(classes.count(c) for c in set(classes)) / len(nearest) if classes else 0.0
    rows.append([concept, int(np.sum(np.argmax(probabilities, axis=1) == concept)), purity, "; ".join(clips)])
  text = (f"<p>Each visual concept with the number of test clips assigned to it (argmax), the share of its "
          f"{clips_per_concept} nearest clips that are of one ground-truth class (purity, %), and those clips.</p>")
  return Section("Concept gallery", text + _table(rows, ["concept", "clips", "purity", "nearest clips"]))


def model_sections(config_dict: Mapping[str, Any], workdir: str, max_videos: int) -> list[Section]:
  """The sections that need the trained model (restored as `--mode=eval` does), or a note why there are none."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from hal_jax import inference  # pylint: disable=g-import-not-at-top  (imports JAX)
  config = ml_collections.ConfigDict(dict(config_dict))
  try:
    data, method, params, mesh, step = inference.restore_trained(config, workdir)
  except errors.CheckpointError as error:
    return [Section("Predictions", f"<p>No predictions: {html.escape(str(error))}</p>")]
  pairs = list(inference.predict_batches(method, params, data.test_pipeline, mesh))
  note = f"<p>Predictions of the checkpoint of step {step}.</p>"
  if hasattr(data, "localize"):
    sections = localization_sections(data, pairs, max_videos)
    gallery = concept_gallery_section(method, params, data)
    if gallery is not None:
      sections.append(gallery)
  elif hasattr(data, "predicted_labels"):
    sections = segmentation_sections(data, pairs, max_videos)
  else:  # A task without per-video figures yet (recognition): its metrics are in the tables above.
    return [Section("Predictions", note + "<p>No per-video figures for this task.</p>")]
  sections[0] = Section(sections[0].title, note + sections[0].body)
  return sections


# ----------------------------------------------------------------------------------------------------------------------
# The page.

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; background: #fff; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; vertical-align: top; }
img { max-width: 100%; display: block; margin: .5em 0; }
details pre { font-size: .85em; background: #f6f6f6; padding: .5em; }
"""


def render(title: str, sections: Sequence[Section]) -> str:
  """The HTML page of `sections`."""
  body = "".join(f"<section><h2>{html.escape(s.title)}</h2>{s.body}</section>" for s in sections)
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
          f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file in the same directory and a rename."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".html", dir=directory)
  try:
    with os.fdopen(handle, "w", encoding="utf-8") as file:
      file.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; a report is an ordinary file.
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise


def build_report(workdir: str, out: str | None = None, *, max_videos: int = 6, predict: bool = True) -> str:
  """Writes the report of `workdir` to `out` (default `<workdir>/report.html`) and returns its path.

  Raises:
    DataError: the workdir has no readable config.json, or metrics.jsonl is malformed.
    HalJaxError: (with `predict`) the data or checkpoint cannot be read.
  """
  if not os.path.isdir(workdir):
    raise errors.ConfigError("--workdir", f"{workdir}: not a directory")
  config = read_config(workdir)
  records = read_records(workdir)
  method = str(config.get("method", "?")).rsplit(".", 1)[-1]
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  sections = [Section("Run", _table([["workdir", os.path.abspath(workdir)], ["method", method],
                                     ["logged steps", max((r.get("step", 0) for r in records), default=0)],
                                     ["report written", stamp]]))]
  sections += metrics_section(records)
  sections.append(curves_section(records))
  if predict:
    sections += model_sections(config, workdir, max_videos)
  config_text = html.escape(json.dumps(config, indent=1, sort_keys=True))
  sections.append(Section("Config", f"<details><summary>config.json</summary><pre>{config_text}</pre></details>"))
  out = out or os.path.join(workdir, REPORT_FILE)
  write_atomic(out, render(f"hal_jax run report: {method}", sections))
  return out


def main(argv: Sequence[str]) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  values = flags.FLAGS
  quiet.quiet_logging(values.verbose)
  with errors.exit_on_bad_input(verbose=values.verbose, leave_at_once=True):
    if not values.workdir:
      raise errors.ConfigError("--workdir", "is required")
    path = build_report(values.workdir, values.out, max_videos=values.videos, predict=values.predict)
  print(path)


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Run directory (config.json, metrics.jsonl, checkpoints).")
  flags.DEFINE_string("out", None, "Output HTML file; default <workdir>/report.html.")
  flags.DEFINE_integer("videos", 6, "Test videos drawn per figure section.")
  flags.DEFINE_bool("predict", True, "Restore the trained model for the prediction sections.")
  flags.DEFINE_bool("verbose", False, "Print tracebacks of bad-input errors.")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
