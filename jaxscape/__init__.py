"""jaxscape: loss-landscape analysis for JAX.

Curvature operators (``hvp``, ``hessian_operator``, ``ggn_operator``, ...) and spectral
solvers (``eigsh``, ``estimate_trace``, ``spectral_density``, ...) over any params pytree and
any ``loss_fn(params, batch) -> scalar``. See ``DESIGN.md`` for the conventions.
"""

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

__version__ = "0.1.0"

__all__ = [
    "Density",
    "Eigs",
    "TaylorStep",
    "TraceEstimate",
    "__version__",
    "averaged_operator",
    "combine",
    "count_params",
    "directional_curvature",
    "eigsh",
    "estimate_trace",
    "ggn_operator",
    "hessian_matrix",
    "hessian_operator",
    "hvp",
    "negative_fraction",
    "partition",
    "power_iteration",
    "restrict",
    "spectral_density",
    "taylor_step",
]
