"""TensorFlow Datasets builders over a `manual_dir` the user fills (nothing is downloaded).

  import hal_jax.tfds  # registers the builders
  ds = tfds.load("mstcn_segmentation/gtea", split="train_split1", data_dir=DATA,
                 download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=GTEA)})

* `mstcn_segmentation`: the MS-TCN directory layout (Breakfast, 50Salads, GTEA, Hollywood, CrossTask configs, and the
  project's synthetic data); splits ``train_split<k>`` / ``test_split<k>``.
* `activitynet_localization`: a localization feature directory (gt.json, features/, video_info.tsv: THUMOS14,
  ActivityNet 1.3, FineGym, FineAction configs, and the synthetic sets); one split per gt.json subset.

`hal_jax.tfds.source` turns a prepared split back into the datasets the training pipelines read.
Needs the `tfds` extra (`pip install -e '.[tfds]'`).
"""

from hal_jax.tfds.localization import ActivitynetLocalization  # noqa: F401  (registers the builder)
from hal_jax.tfds.mstcn import MstcnSegmentation  # noqa: F401  (registers the builder)
