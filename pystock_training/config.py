"""Every default and shared name, in one place.

The parameter defaults are named here for the code that uses them; each parameter is declared,
with this default, once in pystock_training/params.py (PARAMETERS), and
tests/test_project_files.py checks MLproject and every step CLI against that declaration.
"""

from typing import Final

PIPELINE_RUN_NAME: Final = "pystock-training"
MODEL_ARTIFACT_NAME: Final = "model"
PREDICTIONS_ARTIFACT_DIR: Final = "predictions"
PREDICTIONS_FILE_NAME: Final = "predictions.csv"

# Parameter defaults, by the one name each parameter has everywhere.
DATA_FILE: Final = "data/training/data.csv"
MODEL_NAME: Final = "training-model-psystock"
SPLIT: Final = "time"
SPLITS: Final = ("time", "random")
TEST_SIZE: Final = 0.33
RANDOM_STATE: Final = 42
THRESHOLD: Final = 0.5
# A weak, noisy signal: shallow trees, a small learning rate and early stopping keep the
# model from memorising noise; the round cap is rarely reached.
NUM_BOOST_ROUND: Final = 300
MAX_DEPTH: Final = 3
LEARNING_RATE: Final = 0.05
EARLY_STOPPING_ROUNDS: Final = 30
# The promotion gate (pystock_training/gate.py explains the rule).
GATE_METRIC: Final = "roc_auc"
# Every metric logged for the model, the baseline and the champion (pystock_training/metrics.py
# computes them); all are better when higher except log loss.
METRIC_NAMES: Final = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "mcc",
    "roc_auc",
    "average_precision",
    "log_loss",
)
LOWER_IS_BETTER: Final = frozenset({"log_loss"})
MIN_SCORE: Final = 0.5
MAX_REGRESSION: Final = 0.01
FAIL_ON_REJECT: Final = False
# A candidate whose features differ from the champion's is promoted only when the user says
# downstream expects the new shape.
ALLOW_SCHEMA_CHANGE: Final = False
# Scheduling: retrain although the run key says nothing changed; reap RUNNING runs older than this.
FORCE: Final = False
ENGINE: Final = "local"
ENGINES: Final = ("local", "dask")
# Empty: the DASK_SCHEDULER_ADDRESS environment variable, else an embedded LocalCluster.
DASK_SCHEDULER: Final = ""
REAP_AFTER_HOURS: Final = 6.0

# Share of the training part held out, at its end in time order, to pick the number of rounds.
VALIDATION_FRACTION: Final = 0.2
# Below this the split cannot give train, validation and test parts that hold both classes.
MIN_ROWS: Final = 30
# Fewer test rows than this that the champion provably never trained on say nothing about
# which model is better: a 100-row ROC AUC has a 95% interval about 0.2 wide.
MIN_ROWS_COMPARED: Final = 100
# The MLmodel metadata key listing a model's feature names in order (serving.FEATURES_KEY, which
# is logged with the model and so cannot import this module).
FEATURES_KEY: Final = "features"
# The champion status (a train run tag, "incompatible: <how>") of a candidate whose features
# differ from the champion's; the gate's input_contract check reads it.
INCOMPATIBLE: Final = "incompatible"
# Rows of the input example stored with the model and predicted by the serving check.
EXAMPLE_ROWS: Final = 5

# Run and model-version tags.
TAG_ERROR: Final = "pystock.error"
TAG_DATA_DIGEST: Final = "pystock.data_digest"
TAG_DATA_FILE: Final = "pystock.data_file"
TAG_DATA_SIZE: Final = "pystock.data_size"  # bytes, with the digest: verifies appends
TAG_DATA_ROWS: Final = "pystock.data_rows"
TAG_CHAMPION_ROWS_COMPARED: Final = "pystock.champion_rows_compared"
TAG_CODE_VERSION: Final = "pystock.code_version"
TAG_MODEL_URI: Final = "pystock.model_uri"
TAG_PREDICTIONS_FILE: Final = "pystock.predictions_file"
# The predictions file's sha256 as train_model wrote it: evaluate_model refuses a file that differs.
TAG_PREDICTIONS_SHA256: Final = "pystock.predictions_sha256"
TAG_DECISION: Final = "pystock.decision"
# "final" when the decision is a verdict on the model (the run key is done), "retry" otherwise.
TAG_VERDICT: Final = "pystock.verdict"
TAG_REPLACED_VERSION: Final = "pystock.replaced_version"
TAG_MODEL_VERSION: Final = "pystock.model_version"
TAG_TRAIN_RUN_ID: Final = "pystock.train_run_id"
TAG_EVALUATE_RUN_ID: Final = "pystock.evaluate_run_id"
TAG_METRIC_PREFIX: Final = "pystock.metric."
TAG_CHAMPION_VERSION: Final = "pystock.champion_version"
TAG_CHAMPION_STATUS: Final = "pystock.champion_status"
# On a version promoted although its features differ from the champion's: how they differ.
TAG_SCHEMA_CHANGE: Final = "pystock.schema_change"
TAG_SUMMARY: Final = "pystock.summary"
TAG_ENGINE: Final = "pystock.engine"
TAG_DASK_WORKERS: Final = "pystock.dask_workers"
TAG_DASK_SCHEDULER: Final = "pystock.dask_scheduler"
TAG_RUN_KEY: Final = "pystock.run_key"
TAG_SKIPPED_FOR: Final = "pystock.skipped_for"
DECISION_ARTIFACT: Final = "decision.json"

ALIAS_CHAMPION: Final = "champion"
ALIAS_CHALLENGER: Final = "challenger"
