"""The run report: its sections from a workdir's files, its figures, and the page of a trained run as a real headless
Chromium renders it (no console errors, every image decoded), reached through the command lines a user runs."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from hal_jax import errors
from hal_jax import quiet
from hal_jax import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags of a headless Chromium on a machine without network, display or D-Bus.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
# Injected into a copy of the page: records console errors, uncaught errors and failed resources, and on load
# writes them and each image's decoded size into <pre id="probe">, which --dump-dom then shows.
PROBE = """<script>
window.__problems = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__problems.push(t && t.tagName ? "failed to load " + t.tagName : "uncaught " + e.message);
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__problems.push("console.error " + Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments);
};
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (i) {
    return [i.complete, i.naturalWidth, i.naturalHeight]; });
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({problems: window.__problems, images: images});
  document.body.appendChild(pre);
});
</script>"""


def write_workdir(path, records, config=None):
  path.mkdir(exist_ok=True)
  (path / "config.json").write_text(json.dumps(config or {"method": "hal_jax.methods.atba", "seed": 0}))
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  return path


RECORDS = [
    {"step": 2, "epoch": 0, "train/loss": 2.0, "train/frame_ce": 1.5, "train/learning_rate": 1e-3,
     "train/input_wait_fraction": 0.1},
    {"step": 4, "epoch": 1, "train/loss": 1.0, "train/frame_ce": 0.7, "train/learning_rate": 5e-4},
    {"step": 4, "epoch": 1, "eval/mof": 61.5, "eval/edit": 40.0, "eval/mcc_action": 70.0, "eval/seconds": 1.0},
    {"step": 4, "selected/mof": 61.5, "selected/selected_step": 4},
]


def images_of(page):
  return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_of_the_logs_only(tmp_path):
  workdir = write_workdir(tmp_path / "run", RECORDS)
  path = report.build_report(str(workdir), predict=False)
  assert path == str(workdir / "report.html")
  page = open(path, encoding="utf-8").read()
  assert sorted(os.listdir(workdir)) == ["config.json", "metrics.jsonl", "report.html"]  # no temporary left
  for title in ("Metrics (test split, 0-100)", "Identifiability", "Training curves", "loss terms", "learning rate",
                "evaluation metrics", "Config"):
    assert title in page
  assert "selected checkpoint (step 4)" in page and "last evaluation (step 4)" in page
  images = images_of(page)
  assert len(images) == 3 and all(image.startswith(PNG_MAGIC) for image in images)
  assert "http://" not in page and "https://" not in page  # self-contained
  assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)


def test_report_groups_curves_and_skips_the_wait_fraction():
  section = report.curves_section(RECORDS)
  assert section.body.count("<img") == 3
  assert report.last_metrics(RECORDS, "eval/") == (4, {"mof": 61.5, "edit": 40.0, "mcc_action": 70.0,
                                                       "seconds": 1.0})
  assert report.last_metrics(RECORDS, "nothing/") == (None, {})


def test_report_bad_workdir(tmp_path):
  with pytest.raises(errors.ConfigError, match="not a directory"):
    report.build_report(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.DataError, match="config.json: file not found"):
    report.build_report(str(tmp_path / "empty"))
  workdir = write_workdir(tmp_path / "bad", RECORDS)
  (workdir / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
  with pytest.raises(errors.DataError, match="line 2: not JSON"):
    report.build_report(str(workdir), predict=False)
  assert not (workdir / "report.html").exists()


def test_segmentation_section_draws_every_requested_video():
  videos = [types.SimpleNamespace(name=f"v{i}", labels=np.array([0, 0, 1, 1, 2])) for i in range(3)]
  data = types.SimpleNamespace(
      test=types.SimpleNamespace(videos=videos), label_map=types.SimpleNamespace(names=("background", "a", "b")),
      predicted_labels=lambda pairs: {v.name: np.array([0, 1, 1, 1, 2]) for v in videos})
  (section,) = report.segmentation_sections(data, [], max_videos=2)
  assert section.body.count("<img") == 2 and "2 of 3 test videos" in section.body


def test_concept_gallery_lists_the_clips_nearest_each_concept():
  # Two concepts; clip 1 of video "a" (class 1) is nearest concept 1, the others nearest concept 0.
  logits = {"a": np.array([[[3.0, 0.0], [0.0, 4.0], [2.0, 0.0]]]), "b": np.array([[[1.0, 0.0], [5.0, 0.0]]])}
  videos = [types.SimpleNamespace(name=name, features=np.zeros([len(logits[name][0]), 2], np.float32),
                                  feature_fps=1.0, segments=np.array([[1.0, 2.0]]), labels=np.array([1]))
            for name in ("a", "b")]
  model = types.SimpleNamespace(apply=lambda variables, x: types.SimpleNamespace(
      concept_logits=logits["a" if x.shape[1] == 3 else "b"]))
  data = types.SimpleNamespace(test=types.SimpleNamespace(videos=videos),
                               label_map=types.SimpleNamespace(names=("x", "y")))
  section = report.concept_gallery_section(types.SimpleNamespace(model=model), {}, data, clips_per_concept=1)
  rows = re.findall(r"<tr>(.*?)</tr>", section.body)[1:]
  assert "a @ 1.0s (y" in rows[1] and "b @ 1.0s (y" in rows[0]
  assert report.concept_gallery_section(types.SimpleNamespace(), {}, data) is None


def test_filtered_stderr_drops_only_the_noise(capfd):
  with quiet.filtered_stderr():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see ...\n")
    os.write(2, b"a real warning\n")
  assert capfd.readouterr().err == "a real warning\n"


def run_cli(*args, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg")
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=cwd,
                        timeout=600, check=False)


def assert_quiet(stderr):
  for noise in quiet.NOISE + ("oneDNN", "absl::InitializeLog", "Unable to initialize backend"):
    assert noise not in stderr, stderr[:2000]


def chromium(*args):
  return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=120,
                        check=False)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_of_a_trained_run_renders_in_chromium(tmp_path):
  workdir = tmp_path / "ahlm"
  trained = run_cli("hal_jax.main", "--config=configs/ahlm.py:test", f"--workdir={workdir}")
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert_quiet(trained.stderr)
  made = run_cli("hal_jax.report", f"--workdir={workdir}", "--videos=2")
  assert made.returncode == 0, made.stderr[-3000:]
  assert made.stdout.strip() == str(workdir / "report.html") and made.stderr == "", made.stderr[-2000:]
  page = (workdir / "report.html").read_text(encoding="utf-8")
  assert "Localization and change points" in page and "Identifiability" in page
  images = images_of(page)
  assert len(images) >= 5 and all(image.startswith(PNG_MAGIC) for image in images)

  probed = tmp_path / "probed.html"
  probed.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
  dom = chromium(f"--user-data-dir={tmp_path / 'profile1'}", "--virtual-time-budget=10000", "--dump-dom",
                 probed.as_uri())
  assert dom.returncode == 0, dom.stderr[-2000:]
  probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.DOTALL).group(1))
  assert probe["problems"] == []
  assert len(probe["images"]) == len(images)
  assert all(complete and width > 100 and height > 50 for complete, width, height in probe["images"])
  assert "<h2>Training curves</h2>" in dom.stdout

  screenshot = tmp_path / "page.png"
  shot = chromium(f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1280,2400",
                  f"--screenshot={screenshot}", (workdir / "report.html").as_uri())
  assert shot.returncode == 0, shot.stderr[-2000:]
  from matplotlib import image as mpimg  # pylint: disable=g-import-not-at-top
  pixels = mpimg.imread(screenshot)
  assert pixels.shape[:2] == (2400, 1280)
  # Rendered content: a white page with text and plots, not a blank or error page.
  assert 0.5 < float(pixels[..., :3].mean()) < 0.995 and float(pixels[..., :3].std()) > 0.05
