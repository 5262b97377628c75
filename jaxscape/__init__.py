"""jaxscape: loss-landscape analysis for JAX.

Curvature operators (``hvp``, ``hessian_operator``, ``ggn_operator``, ...) and spectral
solvers (``eigsh``, ``estimate_trace``, ``spectral_density``, ...) over any params pytree and
any ``loss_fn(params, batch) -> scalar``; models and loss builders (``MLP``, ``CNN``,
``LSTMClassifier``, ``DeepLinear``, ``model_loss``), a resumable training loop (``fit``), and the
modules ``jaxscape.toys`` (problems with known answers) and ``jaxscape.data`` /
``jaxscape.datasets``. See ``DESIGN.md`` for the conventions.
"""

from jaxscape import data, datasets, toys
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
from jaxscape.landscape import (
    Plane,
    Profile,
    goodfellow_plane,
    interpolate,
    pca_directions,
    plane_through,
    project,
    random_direction,
    random_walk,
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

__version__ = "0.1.0"

__all__ = [
    "CNN",
    "MLP",
    "DeepLinear",
    "Density",
    "Eigs",
    "FitResult",
    "History",
    "LSTMClassifier",
    "Plane",
    "Profile",
    "TaylorStep",
    "TraceEstimate",
    "__version__",
    "accuracy",
    "averaged_operator",
    "combine",
    "compare_optimizers",
    "count_params",
    "cross_entropy_loss",
    "data",
    "datasets",
    "directional_curvature",
    "eigsh",
    "estimate_trace",
    "fit",
    "from_apply",
    "from_nnx",
    "ggn_operator",
    "goodfellow_plane",
    "hessian_matrix",
    "hessian_operator",
    "hvp",
    "init_model",
    "interpolate",
    "model_loss",
    "mse_loss",
    "negative_fraction",
    "partition",
    "pca_directions",
    "plane_through",
    "power_iteration",
    "project",
    "random_direction",
    "random_walk",
    "restrict",
    "spectral_density",
    "surface",
    "taylor_step",
    "top_eigenvalue_callback",
    "toys",
]
