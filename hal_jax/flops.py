"""Analytic FLOP count of a JAX function, from its jaxpr (shapes only; no compiler, no device).

Why not XLA's `cost_analysis()`: on GPU it does not count the matmuls that become cuBLAS calls (it reported 70 GFLOP
for an ATBA step that XLA:CPU counts at 126), so a model-FLOPs utilisation computed from it is wrong there. The jaxpr
is the same on every backend, so this count is too.

Rules (those of XLA's HloCostAnalysis, so that the two agree on CPU):

* `dot_general`: 2 · (product of the batch, free and contracting sizes) — one multiply and one add per term;
* `conv_general_dilated`: 2 · output elements · kernel elements per output feature;
* elementwise arithmetic, comparisons and selects: one per output element; reductions: one per input element;
  transcendental functions (exp, log, tanh, ...) are counted apart (`transcendentals`), as XLA does;
* data movement (reshape, transpose, slicing, gathers, broadcasts, casts) costs nothing;
* `scan` counts its body `length` times (XLA lowers it to a while loop whose trip count it does not use, so on a
  scanned model XLA counts less; `scan_trip_counts=False` reproduces that); a `while` loop's body is counted once
  (its trip count is data-dependent); a `cond` counts its most expensive branch, or branch `cond_branch` of every
  cond when that is given (the branch a caller knows runs, e.g. 0: the false branch of `lax.cond`).

`model` is the matmul part (dot_general + convolution): the FLOPs a matrix unit executes, which is what a
model-FLOPs utilisation against a GEMM peak measures.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
from jax.extend import core as jex_core

_TRANSCENDENTAL = {"exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos", "tan", "sqrt", "rsqrt",
                   "cbrt", "pow", "erf", "erfc", "erf_inv", "atan2", "asin", "acos", "atan", "sinh", "cosh", "asinh",
                   "acosh", "atanh", "lgamma", "digamma"}
_ELEMENTWISE = {"add", "sub", "mul", "div", "rem", "max", "min", "neg", "abs", "sign", "floor", "ceil", "round",
                "select_n", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor", "integer_pow", "square",
                "clamp", "nextafter", "is_finite", "shift_left", "shift_right_logical", "shift_right_arithmetic",
                "population_count", "add_any", "max_p", "min_p", "reciprocal"}
_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "argmax",
               "argmin", "cumsum", "cummax", "cumlogsumexp", "cumprod", "cummin", "reduce_precision"}


@dataclasses.dataclass
class Count:
  """FLOPs of a function: `model` (matmuls and convolutions), `elementwise` (everything else counted as a flop),
  `transcendentals` (exp, log, ... ; not in `total`, as in XLA)."""
  model: float = 0.0
  elementwise: float = 0.0
  transcendentals: float = 0.0

  @property
  def total(self) -> float:
    """What XLA's `cost_analysis()["flops"]` counts: matmuls plus elementwise operations."""
    return self.model + self.elementwise

  def add(self, other: Count, times: float = 1.0) -> None:
    self.model += times * other.model
    self.elementwise += times * other.elementwise
    self.transcendentals += times * other.transcendentals


def _size(aval: Any) -> int:
  return math.prod(getattr(aval, "shape", ()))


def _dot_flops(eqn: Any) -> float:
  lhs, rhs = (v.aval for v in eqn.invars)
  (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
  rhs_free = math.prod(d for i, d in enumerate(rhs.shape) if i not in rhs_contract and i not in rhs_batch)
  return 2.0 * _size(lhs) * rhs_free


def _conv_flops(eqn: Any) -> float:
  out = eqn.outvars[0].aval
  rhs = eqn.invars[1].aval
  spec = eqn.params["dimension_numbers"]
  out_feature_dim = spec.rhs_spec[0]
  per_output = _size(rhs) // rhs.shape[out_feature_dim]  # in_features / groups · spatial kernel
  return 2.0 * _size(out) * per_output


def _sub_jaxprs(eqn: Any) -> list[Any]:
  found = []
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jex_core.ClosedJaxpr):
        found.append(item.jaxpr)
      elif isinstance(item, jex_core.Jaxpr):
        found.append(item)
  return found


def equation_count(eqn: Any) -> Count:
  """The `Count` of one equation that holds no sub-jaxpr (zero for data movement)."""
  count = Count()
  name = eqn.primitive.name
  if name == "dot_general":
    count.model = _dot_flops(eqn)
  elif name == "conv_general_dilated":
    count.model = _conv_flops(eqn)
  elif name in _TRANSCENDENTAL:
    count.transcendentals = sum(_size(v.aval) for v in eqn.outvars)
  elif name in _ELEMENTWISE:
    count.elementwise = sum(_size(v.aval) for v in eqn.outvars)
  elif name in _REDUCTIONS:
    count.elementwise = sum(_size(v.aval) for v in eqn.invars)
  return count


def count_jaxpr(jaxpr: Any, scan_trip_counts: bool = True, cond_branch: int | None = None) -> Count:
  """The `Count` of a (closed or open) jaxpr."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  count = Count()
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "scan":
      count.add(count_jaxpr(eqn.params["jaxpr"], scan_trip_counts, cond_branch),
                eqn.params["length"] if scan_trip_counts else 1)
    elif name == "cond":
      branches = [count_jaxpr(b, scan_trip_counts, cond_branch) for b in eqn.params["branches"]]
      count.add(max(branches, key=lambda c: c.total) if cond_branch is None else branches[cond_branch])
    else:  # pjit, custom_jvp/vjp, remat, while (body and condition once), shard_map, ...; or a plain equation
      subs = _sub_jaxprs(eqn)
      for sub in subs:
        count.add(count_jaxpr(sub, scan_trip_counts, cond_branch))
      if not subs:
        count.add(equation_count(eqn))
  return count


def count(fn: Callable[..., Any], *args: Any, scan_trip_counts: bool = True, cond_branch: int | None = None) -> Count:
  """The `Count` of `fn(*args)` (arrays, pytrees of them or `jax.ShapeDtypeStruct`s; nothing is executed)."""
  return count_jaxpr(jax.make_jaxpr(fn)(*args), scan_trip_counts, cond_branch)
