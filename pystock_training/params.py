"""The parameters of every entry point, declared once in ``PARAMETERS``, and what derives from it.

Each ``Param`` gives a parameter's name, type, default, limits, help text, the entry points that
take it and whether it is in the run key. From that come the click options of every script
(``cli.parameter_options``), the range checks (``check_params``), the run key's parameters
(``RUN_KEY_PARAMETERS``), what the driver passes to each step, what each step logs, and the
dataclasses ``PipelineParams``, ``TrainParams`` and ``GateParams``. MLproject repeats the
declaration because MLflow reads it from there; tests/test_project_files.py holds it against
``PARAMETERS``.

Kept free of xgboost, sklearn, matplotlib and click so that the driver (main), which validates
every parameter before it starts a step, imports only MLflow: about 120 MB and 1 s less per
pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, asdict, dataclass, field
from typing import Any, Final, Literal, Protocol, TypeVar, get_args

from pystock_training import config
from pystock_training.errors import PystockError

EntryPoint = Literal["main", "train_model", "evaluate_model", "register_model", "score"]
ENTRY_POINTS: Final[tuple[EntryPoint, ...]] = get_args(EntryPoint)


class Limits(Protocol):
    """What a parameter's value must be; ``problem`` says what is wrong, in one line, or None."""

    def problem(self, name: str, value: Any) -> str | None: ...


@dataclass(frozen=True)
class Bounds:
    """The range a float parameter must lie in; NaN and infinities are never in it."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        if self.low == -math.inf and self.high == math.inf:
            return "a finite number"
        if self.high == math.inf:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        if self.low_open and self.high_open:
            return f"between {self.low:g} and {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def problem(self, name: str, value: float) -> str | None:
        return None if value in self else f"{name} must be {self}, got {value}"


@dataclass(frozen=True)
class Whole:
    """The closed range an integer parameter must lie in, and how a message states it."""

    low: int
    high: int
    text: str = ""

    def problem(self, name: str, value: int) -> str | None:
        if self.low <= value <= self.high:
            return None
        return f"{name} must be {self.text or f'in [{self.low}, {self.high}]'}, got {value}"


@dataclass(frozen=True)
class Choices:
    """The values a string parameter may take; ``message`` is formatted with name, choices, value."""

    values: tuple[str, ...]
    message: str = "{name} must be one of {choices}, got {value!r}"

    def problem(self, name: str, value: str) -> str | None:
        if value in self.values:
            return None
        return self.message.format(name=name, choices=", ".join(self.values), value=value)


@dataclass(frozen=True)
class Rule:
    """A check too particular for a range or a list: a function from the value to its problem."""

    check: Callable[[Any], str | None]

    def problem(self, name: str, value: Any) -> str | None:
        return self.check(value)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


# The default of a parameter an entry point cannot run without (MLproject gives it no default).
REQUIRED: Final = _Required()


@dataclass(frozen=True)
class Param:
    """One parameter: the same name in MLproject, the CLI flag (kebab-case), the code and the logs.

    Attributes:
        type: ``str``, ``int``, ``float`` or ``bool``. MLflow has no int or bool type: MLproject
            declares integers ``float`` and booleans ``string``, and the CLIs parse them.
        entry_points: The entry points that take it; ``main`` passes its value on to the others.
        in_run_key: Whether the run key hashes it, so that the same key means the same model.
        limits: What its value must be, checked before any work; None when anything goes.
        entry_defaults: Defaults that differ by entry point (``REQUIRED`` where one is needed).
    """

    name: str
    type: type
    default: Any
    help: str
    _: KW_ONLY
    entry_points: tuple[EntryPoint, ...]
    in_run_key: bool
    limits: Limits | None = None
    entry_defaults: Mapping[EntryPoint, Any] = field(default_factory=dict)

    @property
    def flag(self) -> str:
        """The CLI option, and what the MLproject command passes its value as."""
        return "--" + self.name.replace("_", "-")

    def default_for(self, entry_point: EntryPoint) -> Any:
        """Its default in ``entry_point``, or ``REQUIRED``."""
        return self.entry_defaults.get(entry_point, self.default)

    def problem(self, value: Any) -> str | None:
        """What is wrong with a value, in one line, or None."""
        return None if self.limits is None else self.limits.problem(self.name, value)


# What the registry takes as a name (no "/" or ":", not "." or starting ".."), and what survives
# a models:/ URI: "@" starts an alias, "?" a query, "#" a fragment, and whitespace at either end
# is stripped by URL parsing. The registry stores at most 256 characters, and the promotion lock
# registers "<name>.promotion-lock" and its tombstone "<that>.broken.<32 hex>" (lock.py).
REGISTRY_NAME_MAX_LENGTH = 256
MODEL_NAME_MAX_LENGTH = REGISTRY_NAME_MAX_LENGTH - len(".promotion-lock.broken.") - 32
_MODEL_NAME_FORBIDDEN = "/:@?#"


def model_name_problem(model_name: str) -> str | None:
    """Why a registered model name would fail in the registry or in a models:/ URI, or None."""
    if not model_name.strip():
        return "model_name must not be empty"
    bad = sorted({char for char in model_name if char in _MODEL_NAME_FORBIDDEN})
    if bad:
        return (
            f"model_name {model_name!r} contains {' '.join(repr(char) for char in bad)}; "
            f"a registered model name cannot contain any of {' '.join(_MODEL_NAME_FORBIDDEN)} "
            "(they break models:/name@alias URIs)"
        )
    if model_name != model_name.strip() or not model_name.isprintable():
        return f"model_name {model_name!r} has leading or trailing spaces or control characters"
    if model_name == "." or model_name.startswith(".."):
        return f"model_name {model_name!r} cannot be '.' or start with '..'"
    if len(model_name) > MODEL_NAME_MAX_LENGTH:
        return f"model_name is {len(model_name)} characters long, at most {MODEL_NAME_MAX_LENGTH} are stored"
    return None


# Far above any useful value (the defaults are 300 rounds of depth 3; early stopping ends a long
# cap), below what breaks XGBoost. Integral floats make 1e10 easy to type, and XGBoost fails on a
# depth that large with a traceback, after the data is loaded.
MAX_BOOST_ROUNDS = 1_000_000_000
MAX_DEPTH = 30
# What score loads when no model_uri is given.
DEFAULT_MODEL_URI: Final = f"models:/{config.MODEL_NAME}@{config.ALIAS_CHAMPION}"

TRAINING: Final[tuple[EntryPoint, ...]] = ("main", "train_model")
GATE: Final[tuple[EntryPoint, ...]] = ("main", "register_model")

# Every parameter of every entry point. The run key (in_run_key) takes every parameter that can
# change the model, so that the same key means the same model and a verdict can be replayed.
PARAMETERS: Final[tuple[Param, ...]] = (
    # The key hashes the file's bytes, not its name.
    Param(
        "data_file",
        str,
        config.DATA_FILE,
        "Training table: CSV or Parquet, a file, a folder or a glob of parts.",
        entry_points=TRAINING,
        in_run_key=False,
    ),
    Param(
        "model_name",
        str,
        config.MODEL_NAME,
        "Registered model name; its @champion is the model the candidate is compared with.",
        entry_points=("main", "train_model", "register_model"),
        in_run_key=True,
        limits=Rule(model_name_problem),
    ),
    Param(
        "split",
        str,
        config.SPLIT,
        "time: the last test_size of rows in file order are the test set; random: a shuffle.",
        entry_points=TRAINING,
        in_run_key=True,
        limits=Choices(config.SPLITS),
    ),
    Param(
        "test_size",
        float,
        config.TEST_SIZE,
        "Share of rows in the test set.",
        entry_points=TRAINING,
        in_run_key=True,
        limits=Bounds(0, 1, low_open=True, high_open=True),
    ),
    Param(
        "random_state",
        int,
        config.RANDOM_STATE,
        "Seed for the random split and for XGBoost.",
        entry_points=TRAINING,
        in_run_key=True,
        limits=Whole(0, 2**32 - 1, "in [0, 2**32)"),
    ),
    # Turns the same probabilities into labels: the model does not change.
    Param(
        "threshold",
        float,
        config.THRESHOLD,
        "Probability at or above which y_pred is 1.",
        entry_points=("main", "train_model", "score"),
        in_run_key=False,
        limits=Bounds(0, 1, low_open=True, high_open=True),
    ),
    Param(
        "num_boost_round",
        int,
        config.NUM_BOOST_ROUND,
        "Cap on boosting rounds.",
        entry_points=TRAINING,
        in_run_key=True,
        limits=Whole(1, MAX_BOOST_ROUNDS),
    ),
    Param(
        "max_depth",
        int,
        config.MAX_DEPTH,
        "Tree depth.",
        entry_points=TRAINING,
        in_run_key=True,
        limits=Whole(1, MAX_DEPTH),
    ),
    Param(
        "learning_rate",
        float,
        config.LEARNING_RATE,
        "XGBoost eta.",
        entry_points=TRAINING,
        in_run_key=True,
        limits=Bounds(0, 1, low_open=True),
    ),
    Param(
        "early_stopping_rounds",
        int,
        config.EARLY_STOPPING_ROUNDS,
        "Stop when the validation log loss has not improved for this many rounds; 0 turns it off.",
        entry_points=TRAINING,
        in_run_key=True,
        limits=Whole(0, MAX_BOOST_ROUNDS, f"0 (off) to {MAX_BOOST_ROUNDS}"),
    ),
    Param(
        "gate_metric",
        str,
        config.GATE_METRIC,
        "Metric the promotion gate compares; evaluate_model computes its CI against the champion.",
        entry_points=("main", "evaluate_model", "register_model"),
        in_run_key=False,
        limits=Choices(config.METRIC_NAMES, "unknown {name} {value!r}; expected one of {choices}"),
    ),
    Param(
        "min_score",
        float,
        config.MIN_SCORE,
        "The gate metric must be better than this.",
        entry_points=GATE,
        in_run_key=False,
        limits=Bounds(),
    ),
    Param(
        "max_regression",
        float,
        config.MAX_REGRESSION,
        "Reject only when the CI of (candidate - champion) lies entirely below -max_regression.",
        entry_points=GATE,
        in_run_key=False,
        limits=Bounds(0),
    ),
    # It does not change the model, but a rejection for a changed input contract is final: the
    # same key with the flag set must train again, or the flag could never take effect.
    Param(
        "allow_schema_change",
        bool,
        config.ALLOW_SCHEMA_CHANGE,
        "Promote a model whose features differ from the champion's (downstream expects it).",
        entry_points=GATE,
        in_run_key=True,
    ),
    Param(
        "fail_on_reject",
        bool,
        config.FAIL_ON_REJECT,
        "Exit non-zero when the gate rejects the model (for CI gates).",
        entry_points=("main",),
        in_run_key=False,
    ),
    Param(
        "force",
        bool,
        config.FORCE,
        "Train even when a finished run already has this run key.",
        entry_points=("main",),
        in_run_key=False,
    ),
    # local and dask give the same model on a table of flags, but float features are binned per
    # worker on a cluster: the engine can change the model, the scheduler's address cannot.
    Param(
        "engine",
        str,
        config.ENGINE,
        "local: train in this process; dask: on a Dask cluster (dask_scheduler, else an embedded one).",
        entry_points=TRAINING,
        in_run_key=True,
        limits=Choices(config.ENGINES),
    ),
    Param(
        "dask_scheduler",
        str,
        config.DASK_SCHEDULER,
        "With engine=dask: the scheduler address (tcp://host:8786); empty: DASK_SCHEDULER_ADDRESS, "
        "else an embedded LocalCluster sized to this machine.",
        entry_points=TRAINING,
        in_run_key=False,
    ),
    Param(
        "reap_after_hours",
        float,
        config.REAP_AFTER_HOURS,
        "Mark the pipeline's runs still RUNNING after this long FAILED (orphans of a kill -9).",
        entry_points=("main",),
        in_run_key=False,
        limits=Bounds(0),
    ),
    # The hand-offs between the steps, which the driver chooses.
    Param(
        "predictions_file",
        str,
        "",
        "The test predictions CSV train_model writes (empty: a private temp path) and evaluate_model reads.",
        entry_points=("train_model", "evaluate_model"),
        in_run_key=False,
        entry_defaults={"evaluate_model": REQUIRED},
    ),
    Param(
        "data_digest",
        str,
        "",
        "The sha256 the data file must hash to as it is read (the driver's run key). Empty: any.",
        entry_points=("train_model",),
        in_run_key=False,
    ),
    Param(
        "model_uri",
        str,
        "",
        "The model: evaluate_model logs the metrics against it, register_model registers it "
        "(empty: the train run's), score scores with it (an @alias is pinned to its version).",
        entry_points=("evaluate_model", "register_model", "score"),
        in_run_key=False,
        entry_defaults={"score": DEFAULT_MODEL_URI},
    ),
    Param(
        "train_run_id",
        str,
        REQUIRED,
        "The train_model run: register_model registers its model; evaluate_model waits for it to "
        "end and evaluates its model (empty: no train run to wait for).",
        entry_points=("evaluate_model", "register_model"),
        in_run_key=False,
        entry_defaults={"evaluate_model": ""},
    ),
    Param(
        "evaluate_run_id",
        str,
        REQUIRED,
        "The evaluate_model run whose metrics the gate reads.",
        entry_points=("register_model",),
        in_run_key=False,
    ),
    Param(
        "input_file",
        str,
        REQUIRED,
        "Table to score: CSV or Parquet with the model's features, optionally then the 0/1 label.",
        entry_points=("score",),
        in_run_key=False,
    ),
    Param(
        "output_file",
        str,
        REQUIRED,
        "Where to write the scored CSV (y_proba, y_pred, y_true if labelled).",
        entry_points=("score",),
        in_run_key=False,
    ),
)
PARAMETER: Final[Mapping[str, Param]] = {param.name: param for param in PARAMETERS}
RUN_KEY_PARAMETERS: Final = tuple(param.name for param in PARAMETERS if param.in_run_key)


def parameters(entry_point: EntryPoint) -> tuple[Param, ...]:
    """The parameters ``entry_point`` takes, in declaration order."""
    return tuple(param for param in PARAMETERS if entry_point in param.entry_points)


T = TypeVar("T")


def _fields_from_declaration(
    entry_point: EntryPoint, where: Callable[[Param], bool] = lambda param: True
) -> Callable[[type[T]], type[T]]:
    """Make a class a frozen dataclass with one field per declared parameter of ``entry_point``.

    A new parameter becomes a field (with its type and default) without an edit here; the class
    body holds only the code that reads the fields.
    """

    def build(cls: type[T]) -> type[T]:
        chosen = [param for param in parameters(entry_point) if where(param)]
        # A dataclass takes the fields without a default first.
        chosen.sort(key=lambda param: param.default_for(entry_point) is not REQUIRED)
        cls.__annotations__ = {param.name: param.type for param in chosen}
        for param in chosen:
            if param.default_for(entry_point) is not REQUIRED:
                setattr(cls, param.name, param.default_for(entry_point))
        return dataclass(frozen=True)(cls)

    return build


@_fields_from_declaration("main")
class PipelineParams:
    """Parameters of ``main``: one field per parameter that ``parameters("main")`` declares."""

    def for_step(self, entry_point: EntryPoint) -> dict[str, object]:
        """The values of the parameters ``entry_point`` shares with main, by name."""
        values = asdict(self)
        return {param.name: values[param.name] for param in parameters(entry_point) if param.name in values}

    def run_key_params(self) -> dict[str, object]:
        """The parameters the run key hashes, by name."""
        values = asdict(self)
        return {name: values[name] for name in RUN_KEY_PARAMETERS}


@_fields_from_declaration("train_model")
class TrainParams:
    """Parameters of ``train_model``: one field per parameter that ``parameters("train_model")`` declares."""

    def booster_params(self) -> dict[str, object]:
        """The ``params`` dict for ``xgb.train``."""
        # binary:logistic, not the default regression objective: predictions are probabilities.
        # logloss drives early stopping because it is the last (only) eval metric.
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "tree_method": "hist",
            "seed": self.random_state,
        }


@_fields_from_declaration(
    "register_model", lambda param: "main" in param.entry_points and param.name != "model_name"
)
class GateParams:
    """The promotion gate's parameters: register_model's that main passes on, but ``model_name``."""


def problems(values: Mapping[str, object]) -> list[str]:
    """What is wrong with each declared parameter's value, one line each, in declaration order.

    Then what is wrong with a combination: the dask engine takes the time split only.
    """
    found = [
        problem
        for param in PARAMETERS
        if param.name in values and (problem := param.problem(values[param.name])) is not None
    ]
    if values.get("engine") == "dask" and values.get("split", config.SPLIT) != "time":
        found.append(
            f"engine=dask takes split=time only, got split={values['split']}: a random split needs "
            "every row's position in one process (use engine=local for it)"
        )
    return found


def check_params(values: Mapping[str, object]) -> None:
    """Refuse parameter values that would make the run meaningless, all in one line.

    Raises:
        PystockError: A value is out of range, NaN or infinite, or not one of its choices.
    """
    found = problems(values)
    if found:
        raise PystockError("invalid parameters: " + "; ".join(found))


def float_problem(name: str, value: float) -> str | None:
    """What is wrong with a declared parameter's value, or None when it is in range."""
    return PARAMETER[name].problem(value)


def check_gate_metric(metric: str) -> None:
    """Raise ValueError for a metric the gate does not know the direction of."""
    problem = PARAMETER["gate_metric"].problem(metric)
    if problem:
        raise ValueError(problem)


def check_gate_params(params: GateParams) -> None:
    """Raise ValueError for gate parameters that would make every verdict meaningless."""
    found = problems(asdict(params))
    if found:
        raise ValueError("; ".join(found))


def check_register_params(model_name: str, gate: GateParams) -> None:
    """Reject a registration that could only record a meaningless decision.

    Raises:
        PystockError: A model name the registry or a models:/ URI rejects, an unknown gate
            metric, or a gate threshold that is NaN, infinite or out of range.
    """
    check_params({"model_name": model_name} | asdict(gate))
