r"""HAAN: weakly-supervised fine-grained action detection with hierarchical atomic actions (Li, He & Xu, ECCV 2022).

Every detail is in ../shared/specs/haan.md. Presets are chosen with the config argument, optionally followed by a
variant (",variant=NAME": the paper's ablations, Tables 1-4, and the spec's paper-vs-code switches):

  python -m hal_jax.main --config=configs/haan.py --workdir=/tmp/haan                  # "synthetic", the default
  python -m hal_jax.main --config=configs/haan.py:test --workdir=/tmp/haan_test        # tiny, seconds
  python -m hal_jax.main --config=configs/haan.py:finegym --workdir=/tmp/gym \
      --config.data_dir=/data/finegym_haan                                             # FineGym-99, HAAN split
  python -m hal_jax.main --config=configs/haan.py:fineaction,variant=mil_pseudo --workdir=/tmp/fa \
      --config.data_dir=/data/fineaction_i3d100                                        # Table 1, row 2

The synthetic default generates the FineGym-like synthetic set (hal_jax.data.synthetic preset "finegym": 100 train /
40 test videos, 16 fine classes under 4 coarse ones, D = 64) into <workdir>/data, trains smaller networks than the
paper's (H = 128, 32 concepts) and prints fine-level mAP@0.1..0.5 with their average, and the coarse-level mAP (the
same detections scored against the coarse labels). Real-data presets use the paper's / official code's
hyper-parameters (spec section 4; where they differ the code's, spec section 10), and `data_dir` must be a localization
directory (hal_jax.data.localization_formats) with I3D clip features: FineGym [T, 2048] at 1.5 clips/s, at most 309
clips per event; FineAction the released "i3d_100" [100, 4096] per video.

Model selection: never on the test split. `validation_fraction` of the training videos is held out and the
checkpoint with the best validation average mAP is kept (`select_checkpoint="validation"`); "last" keeps the final
epoch; the official code's choice, the best epoch on the reported split, is the variant "select_on_test" and its
numbers are optimistic (spec section 10.9).

Optimiser: Adam, lr 3e-5, no weight decay, constant rate (the method's `learning_rate`); batches of 2 videos, loss
summed over the videos of a batch (spec section 3).
"""

import ml_collections

from hal_jax import config_args

_FINEGYM_TIOU = "0.1:0.5:0.05"  # Spec section 6: FineGym reports 0.1..0.5 and their average.
_FINEACTION_TIOU = "0.5:0.95:0.05"  # FineAction (ActivityNet-style) 0.5..0.95.

# Presets and the keys that differ from the FineGym values of `base_config`.
_PRESETS = {
    # The embedded default: FineGym-like synthetic data, networks scaled to D = 64 so it runs in minutes on a CPU.
    "synthetic": dict(synthetic_preset="finegym", feature_dim=64, train_length=640, bucket_multiple=160,
                      hidden_dim=128, num_concepts=32, top_k=3, dropout=0.3, batch_size=4, num_epochs=40,
                      learning_rate=1e-3, cluster_sample_rate=0.5, kmeans_restarts=3,
                      video_top_divisor=8, detection_alpha=0.1, refresh_chunk_size=8192, eval_every_epochs=10,
                      checkpoint_every_steps=250, validation_fraction=0.1),
    # Tiny: for tests and smoke runs.
    "test": dict(synthetic_preset="finegym_test", feature_dim=16, train_length=96, bucket_multiple=32, hidden_dim=16,
                 num_concepts=8, top_k=2, dropout=0.3, batch_size=4, num_epochs=2, learning_rate=1e-3,
                 recluster_every=1, cluster_sample_rate=0.5, kmeans_restarts=2, kmeans_max_iterations=20,
                 refresh_chunk_size=256, eval_every_epochs=1, checkpoint_every_steps=2,
                 log_every_steps=1, validation_fraction=0.25),
    # FineGym-99, HAAN's split (spec sections 4 and 6): the base config.
    "finegym": dict(synthetic_preset=""),
    # FineAction: 4096-d i3d_100 features, 100 clips per video.
    "fineaction": dict(synthetic_preset="", feature_dim=4096, hidden_dim=1024, train_length=100, bucket_multiple=100,
                       dropout=0.3, coarse_pooling="max", coarse_weight=1.0, num_epochs=50, cluster_sample_rate=0.03,
                       video_top_divisor=4, detection_alpha=-0.8, tiou_thresholds=_FINEACTION_TIOU),
}

# Variants: the paper's ablations (Tables 1-4) and the spec's paper-vs-code switches (section 10). Table 3's GMM and
# Birch rows are not implemented; its k-means rows are the "clusters<N>" variants (model L_mil + L_pseudo). The first
# variant is the default.
_VARIANTS = {
    "full": dict(),
    "mil": dict(pseudo_weight=0.0, concept_weight=0.0, coarse_weight=0.0),  # Tables 1-2, row "L_mil".
    "mil_pseudo": dict(concept_weight=0.0, coarse_weight=0.0),  # "+ L_pseudo"; also Table 3 at 500 clusters.
    "mil_pseudo_concept": dict(coarse_weight=0.0),  # "+ L_concept"; Table 4's cosine row.
    "euclidean": dict(coarse_weight=0.0, concept_distance="euclidean"),  # Table 4's Euclidean row.
    "clusters250": dict(concept_weight=0.0, coarse_weight=0.0, num_concepts=250),
    "clusters750": dict(concept_weight=0.0, coarse_weight=0.0, num_concepts=750),
    "clusters1000": dict(concept_weight=0.0, coarse_weight=0.0, num_concepts=1000),
    "paper_lambda": dict(coarse_weight=1.0),  # λ4 = 1 as printed (FineGym's official config uses 0.1).
    "inverse_frequency": dict(cluster_weighting="inverse_frequency"),  # Spec 10.4: rare clusters weigh more.
    "recluster_every_epoch": dict(recluster_every=1, cluster_sample_rate=1.0),  # The paper's text (spec 10.1).
    "select_on_test": dict(select_checkpoint="test"),  # The official code's optimistic model selection.
    # Seeding distances in a 128-d random projection: 4x faster k-means++ on a CPU, about 1.5% higher inertia at
    # FineGym's sizes (BENCHMARKS.md).
    "sketch_seeding": dict(kmeans_sketch_dim=128),
}


def base_config() -> ml_collections.ConfigDict:
  """Every key of a HAAN experiment with the FineGym values (spec section 4); presets and variants change some."""
  config = ml_collections.ConfigDict()
  config.method = "hal_jax.methods.haan"
  config.seed = 1  # The official code's seed.
  # Matmuls and activations in this dtype ("float32" | "bfloat16"); parameters, optimizer state, softmaxes,
  # losses and metrics stay float32 (hal_jax/precision.py).
  config.compute_dtype = "float32"

  # Data (a localization directory with a coarse/fine hierarchy; spec section 6).
  config.data_dir = ""  # Empty: generate the synthetic preset `synthetic_preset` into <workdir>/data.
  config.synthetic_preset = "finegym"  # Empty for real-data presets: data_dir is then required.
  # Or a prepared TFDS dataset instead of a directory (hal_jax.tfds; e.g. "activitynet_localization/thumos14", one
  # split per gt.json subset), in tfds_data_dir (empty: TFDS's default). Empty: data_dir is read.
  config.tfds_name = ""
  config.tfds_data_dir = ""
  config.train_subset = "train"
  config.test_subset = "test"
  config.test_video_list = ""
  config.feature_dim = 2048
  config.train_length = 309  # Clips per training batch row: >= the longest training video (whole videos).
  config.bucket_multiple = 103  # Test batches are padded to a multiple of this (309 = 3 x 103).
  config.tiou_thresholds = _FINEGYM_TIOU
  config.validation_fraction = 0.1  # Training videos held out for model selection (never the test split).
  config.select_checkpoint = "validation"  # "validation" | "last" | "test" (optimistic, the official code's).
  config.selection_metric = "average_map"  # What checkpoint selection maximises (hal_jax.model_selection).

  # Network (spec section 2).
  config.hidden_dim = 2048
  config.dropout = 0.5
  config.num_concepts = 500
  config.top_k = 5
  config.concept_distance = "cosine"  # "cosine" | "euclidean" (Table 4).
  config.coarse_pooling = "mean"  # "mean" (FineGym) | "max" (FineAction).

  # Losses (spec section 3): λ1..λ4 and the pseudo-label loss's cluster weights.
  config.mil_weight = 1.0
  config.pseudo_weight = 0.001
  config.concept_weight = 0.01
  config.coarse_weight = 0.1  # The official FineGym config; the paper prints 1 (variant "paper_lambda").
  config.cluster_weighting = "frequency"  # "frequency" (official code) | "inverse_frequency".

  # Re-clustering (spec sections 4.1, 10.1 and 10.10).
  config.recluster_every = 5  # Epochs between refreshes, starting before epoch 0.
  config.cluster_sample_rate = 0.1  # k-means is fitted on this share of the training clips (FineAction 0.03).
  config.kmeans_restarts = 10  # scikit-learn 0.24's n_init, the version the official code ran with.
  config.kmeans_max_iterations = 300
  config.kmeans_tolerance = 1e-4
  config.kmeans_sketch_dim = 0  # > 0: k-means++ seeding distances in a random projection of this width (faster).
  config.refresh_chunk_size = 8192  # Clips per device call in the refresh's encoder passes.

  # Inference (spec section 5).
  config.video_top_divisor = 2  # c_j = mean of the ⌈T/m⌉ largest logits (FineAction 4).
  config.detection_alpha = 0.1  # Eq. 11 (FineAction -0.8).
  config.video_score_weight = 0.5

  # Optimisation (spec section 4): Adam, lr 3e-5, constant, no weight decay, batches of 2 videos.
  config.batch_size = 2
  config.num_epochs = 200
  config.learning_rate = 3e-5
  config.weight_decay = 0.0

  # Bookkeeping.
  config.eval_every_epochs = 5
  config.log_every_steps = 50
  config.checkpoint_every_steps = 2000
  config.checkpoints_to_keep = 3
  config.tensorboard = True
  config.progress = True
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of `arg`, ``"<preset>[,variant=NAME]"`` (default "synthetic", variant "full";
  hal_jax.config_args)."""
  return config_args.build(arg, file=__file__, base_config=base_config, presets=_PRESETS, default="synthetic",
                           options={"variant": _VARIANTS})
