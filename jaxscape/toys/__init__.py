"""Toy loss landscapes whose critical points, curvature or dynamics are known in closed form.

Every toy is a ``loss_fn(params, batch) -> scalar`` (``batch=None`` where there is no data),
so every jaxscape tool applies to it unchanged; the known answers make them test problems for
Hessians, spectra, critical-point classification and optimizers.

- 2-D critical points (minimum, saddle, degenerate minimum / saddle, flat maximum, monkey
  saddle), Rosenbrock valleys, a rotated ill-conditioned quadratic; ``critical_point_examples``
  lists them with the kind and the Hessian of each critical point.
- Deep linear models: the scalar chain ``(t - w₁⋯w_K)²`` and matrix regression
  ``‖Y - W_K⋯W₁X‖²``, with Saxe et al.'s closed-form learning curves.
- The spherical p-spin glass and Riemannian gradient / Hessian on the sphere.
- Teacher-student ReLU committees and a single ReLU neuron (population losses in closed form
  through the arc-cosine kernel), a single sigmoid neuron with 2^d local minima, and a tiny ReLU
  regression set with a provably bad local minimum.

The toys live in four modules (``planar``, ``linear``, ``spin_glass``, ``relu``); every public
name is importable from ``jaxscape.toys``. Functions that create arrays take ``dtype``
(default: JAX's default float, float64 under ``jax_enable_x64``); the others compute in the
dtype of their inputs. Sizes are static. Example::

    ex = critical_point_examples()["monkey_saddle"]
    jax.hessian(ex.loss_fn)(ex.point, None)  # zero: the Hessian cannot classify it
"""

from __future__ import annotations

from jaxscape.toys.linear import (
    DeepLinearProblem,
    SaxeCurve,
    deep_linear_chain,
    deep_linear_chain_grad,
    deep_linear_chain_hessian,
    deep_linear_loss,
    deep_linear_product,
    deep_linear_regression,
    input_output_correlation,
    saxe_half_time,
    saxe_init,
    saxe_learning_curve,
)
from jaxscape.toys.planar import (
    CriticalPointExample,
    critical_point_examples,
    degenerate_minimum,
    degenerate_saddle,
    monkey_saddle,
    quadratic_bowl,
    quadratic_saddle,
    quadratic_valley,
    quartic_maximum,
    rosenbrock,
    rosenbrock_hessian,
    rosenbrock_minimum,
)
from jaxscape.toys.relu import (
    BadMinimum,
    TeacherStudent,
    relu_bad_minimum,
    relu_kernel,
    relu_neuron_grad,
    relu_neuron_loss,
    relu_regression_loss,
    sigmoid_neuron_data,
    sigmoid_neuron_loss,
    teacher_student,
    teacher_student_data,
    teacher_student_loss,
    teacher_student_sampled_loss,
)
from jaxscape.toys.spin_glass import (
    p_spin_energy,
    p_spin_glass,
    project_to_sphere,
    random_spins,
    sphere_gradient,
    sphere_hessian_matrix,
    sphere_hessian_operator,
)

__all__ = [
    "BadMinimum",
    "CriticalPointExample",
    "DeepLinearProblem",
    "SaxeCurve",
    "TeacherStudent",
    "critical_point_examples",
    "deep_linear_chain",
    "deep_linear_chain_grad",
    "deep_linear_chain_hessian",
    "deep_linear_loss",
    "deep_linear_product",
    "deep_linear_regression",
    "degenerate_minimum",
    "degenerate_saddle",
    "input_output_correlation",
    "monkey_saddle",
    "p_spin_energy",
    "p_spin_glass",
    "project_to_sphere",
    "quadratic_bowl",
    "quadratic_saddle",
    "quadratic_valley",
    "quartic_maximum",
    "random_spins",
    "relu_bad_minimum",
    "relu_kernel",
    "relu_neuron_grad",
    "relu_neuron_loss",
    "relu_regression_loss",
    "rosenbrock",
    "rosenbrock_hessian",
    "rosenbrock_minimum",
    "saxe_half_time",
    "saxe_init",
    "saxe_learning_curve",
    "sigmoid_neuron_data",
    "sigmoid_neuron_loss",
    "sphere_gradient",
    "sphere_hessian_matrix",
    "sphere_hessian_operator",
    "teacher_student",
    "teacher_student_data",
    "teacher_student_loss",
    "teacher_student_sampled_loss",
]
