"""jaxscape: loss-landscape analysis for JAX.

Curvature operators (``hvp``, ``hessian_operator``, ``ggn_operator``, ...) and spectral
solvers (``eigsh``, ``estimate_trace``, ``spectral_density``, ...) over any params pytree and
any ``loss_fn(params, batch) -> scalar``; models and loss builders (``MLP``, ``CNN``,
``LSTMClassifier``, ``DeepLinear``, ``model_loss``), a resumable training loop (``fit``), and the
modules ``jaxscape.toys`` (problems with known answers) and ``jaxscape.data`` /
``jaxscape.datasets``; critical points (``classify``, ``find_critical_point``), second-order
and noisy optimizers (``jaxscape.optim``), saddle dynamics (``escape_saddle``), and
``jaxscape.distributed`` for many devices and hosts.
See ``DESIGN.md`` for the conventions.
"""

from typing import TYPE_CHECKING, Any

from jaxscape import data, datasets, distributed, dynamics, experiment, optim, toys
from jaxscape.connectivity import (
    Alignment,
    Curve,
    align,
    barrier,
    bezier,
    curve_losses,
    fit_curve,
    line_losses,
    permute,
    polychain,
    weight_matching,
)
from jaxscape.critical import (
    CriticalPoint,
    Probe,
    Search,
    classify,
    find_critical_point,
    find_critical_points,
)
from jaxscape.curvature import (
    TaylorStep,
    averaged_operator,
    combine,
    count_params,
    directional_curvature,
    ggn_operator,
    hessian_matrix,
    hessian_operator,
    hvp,
    partition,
    restrict,
    taylor_step,
)
from jaxscape.distributed import (
    RaggedBatch,
    data_mesh,
    map_points,
    ragged_loss,
    shard_batch,
    split_batch,
)
from jaxscape.dynamics import (
    Escape,
    escape_saddle,
    gd_escape_time,
    saddle_optimizers,
    saddle_problems,
)
from jaxscape.landscape import (
    BasinWidth,
    Plane,
    Profile,
    Sharpness,
    basin_width,
    disagreement,
    goodfellow_plane,
    interpolate,
    pca_directions,
    plane_through,
    project,
    random_direction,
    random_walk,
    sharpness,
    surface,
)
from jaxscape.models import (
    CNN,
    MLP,
    DeepLinear,
    LSTMClassifier,
    accuracy,
    cross_entropy_loss,
    from_apply,
    from_nnx,
    init_model,
    model_loss,
    mse_loss,
)
from jaxscape.optim import (
    CurvatureRecord,
    curvature_callback,
    entropy_sgd,
    newton,
    newton_step,
    perturbed_gd,
    saddle_free_newton,
    saddle_free_newton_step,
    sgld,
)
from jaxscape.problems import Problem, builtin_problem, list_builtins, load_problem
from jaxscape.runfolder import RunFolder, StageRecord, load_params, save_params
from jaxscape.spectrum import (
    Density,
    Eigs,
    TraceEstimate,
    eigsh,
    estimate_trace,
    negative_fraction,
    power_iteration,
    spectral_density,
)
from jaxscape.train import FitResult, History, compare_optimizers, fit, top_eigenvalue_callback

if TYPE_CHECKING:
    from jaxscape import report
    from jaxscape.report import Report, ReportOptions

__version__ = "0.1.0"

# ``report`` (and through it matplotlib, the HTML writer and SciPy) is imported on first use:
# it is a second or more of start-up that every process of a multi-host run, and every user
# who only wants the numbers, would otherwise pay.
_LAZY = {"report": None, "Report": "Report", "ReportOptions": "ReportOptions"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'jaxscape' has no attribute {name!r}")
    import importlib

    module = importlib.import_module("jaxscape.report")
    value = module if _LAZY[name] is None else getattr(module, _LAZY[name])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CNN",
    "MLP",
    "Alignment",
    "BasinWidth",
    "CriticalPoint",
    "CurvatureRecord",
    "Curve",
    "DeepLinear",
    "Density",
    "Eigs",
    "Escape",
    "FitResult",
    "History",
    "LSTMClassifier",
    "Plane",
    "Probe",
    "Problem",
    "Profile",
    "RaggedBatch",
    "Report",
    "ReportOptions",
    "RunFolder",
    "Search",
    "Sharpness",
    "StageRecord",
    "TaylorStep",
    "TraceEstimate",
    "__version__",
    "accuracy",
    "align",
    "averaged_operator",
    "barrier",
    "basin_width",
    "bezier",
    "builtin_problem",
    "classify",
    "combine",
    "compare_optimizers",
    "count_params",
    "cross_entropy_loss",
    "curvature_callback",
    "curve_losses",
    "data",
    "data_mesh",
    "datasets",
    "directional_curvature",
    "disagreement",
    "distributed",
    "dynamics",
    "eigsh",
    "entropy_sgd",
    "escape_saddle",
    "estimate_trace",
    "experiment",
    "find_critical_point",
    "find_critical_points",
    "fit",
    "fit_curve",
    "from_apply",
    "from_nnx",
    "gd_escape_time",
    "ggn_operator",
    "goodfellow_plane",
    "hessian_matrix",
    "hessian_operator",
    "hvp",
    "init_model",
    "interpolate",
    "line_losses",
    "list_builtins",
    "load_params",
    "load_problem",
    "map_points",
    "model_loss",
    "mse_loss",
    "negative_fraction",
    "newton",
    "newton_step",
    "optim",
    "partition",
    "pca_directions",
    "permute",
    "perturbed_gd",
    "plane_through",
    "polychain",
    "power_iteration",
    "project",
    "ragged_loss",
    "random_direction",
    "random_walk",
    "report",
    "restrict",
    "saddle_free_newton",
    "saddle_free_newton_step",
    "saddle_optimizers",
    "saddle_problems",
    "save_params",
    "sgld",
    "shard_batch",
    "sharpness",
    "spectral_density",
    "split_batch",
    "surface",
    "taylor_step",
    "top_eigenvalue_callback",
    "toys",
    "weight_matching",
]
