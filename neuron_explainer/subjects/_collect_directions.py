"""Directions in a collection (used by `neuron_explainer.subjects.collect.collect`): ``K``
user-given vectors at one hook site, one unit of kind ``direction`` each (index = the vector's
row), read in one streaming pass.

Each unit's activation is computed inside the site's forward hook exactly as the single-unit
path computes it (`neuron_explainer.subjects.units`): ``site_activation @ vector``, in float64
when the model runs in float64, else float32; a part's vectors are multiplied at once
(``[tokens, d] @ [d, part]``), which can differ from one vector at a time in the last bits of
float32 (about 1e-6 relative).

torch and numpy are imported only when a group is built.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from neuron_explainer.errors import InvalidInputError
from neuron_explainer.models.hook_sites import resolve
from neuron_explainer.subjects._collect_units import UnitGroup
from neuron_explainer.subjects._unit_sources import read_vectors
from neuron_explainer.subjects.units import _check_width, _flat

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["Directions", "direction_groups", "load_directions"]


@dataclass(frozen=True, eq=False)
class Directions:
    """``K`` directions in a hook site's activation space.

    Attributes:
        matrix: ``[K, d_model]``, float64 (one row per unit).
        sha256: hex sha256 of ``matrix`` as contiguous little-endian float64 bytes, rows in
            order (for one vector the same as `neuron_explainer.subjects.units.Direction`'s).
        rows_sha256: each row's sha256, as a single direction's.
        path: the ``.npy`` file they were read from, or ``None``.
    """

    matrix: np.ndarray
    sha256: str
    rows_sha256: list[str]
    path: str | None = None

    def provenance(self) -> dict[str, Any]:
        """What the collection's meta (and, without ``path``, its config) says of them."""
        return {
            "sha256": self.sha256,
            "path": self.path,
            "width": int(self.matrix.shape[1]),
            "rows": int(self.matrix.shape[0]),
            "rows_sha256": self.rows_sha256,
        }


def load_directions(direction: str | os.PathLike[str] | Any) -> Directions:
    """`Directions` from a ``.npy`` file (path) or an array-like: one vector ``[d_model]``
    (one unit) or ``K`` of them ``[K, d_model]`` (``K`` units, row ``i`` the unit of index
    ``i``).

    Raises:
        InvalidInputError: no such file, not a ``.npy`` array, not 1-D or 2-D, empty, or
            holding NaN or infinite values.
    """
    import numpy as np

    array, path = read_vectors(direction, "[d_model] or [K, d_model]")
    where = f" in {path}" if path else ""
    if array.ndim not in (1, 2) or array.size == 0:
        raise InvalidInputError(
            f"the directions{where} have shape {list(array.shape)}; give one vector [d_model] "
            "or several as rows [K, d_model]"
        )
    if not np.isfinite(array).all():
        raise InvalidInputError(f"the directions{where} hold NaN or infinite values")
    matrix = array.reshape(-1, array.shape[-1])
    rows = [hashlib.sha256(row.tobytes()).hexdigest() for row in matrix]
    return Directions(matrix, hashlib.sha256(array.tobytes()).hexdigest(), rows, path)


def direction_groups(model: Any, directions: Directions, hook: str, chunk: int) -> list[UnitGroup]:
    """The one group of ``directions`` read at the site ``hook`` (units of kind
    ``direction``, index = row, ``UnitId.site`` = ``hook``).

    Raises:
        InvalidInputError: a site the model does not have.
    """
    import torch

    site = resolve(model, hook)
    width = int(directions.matrix.shape[1])
    vectors: dict[tuple[torch.dtype, torch.device, int, int], torch.Tensor] = {}

    def compute(tensor: torch.Tensor, part: list[int]) -> torch.Tensor:
        flat = _flat(site, tensor)
        _check_width(site, flat, width, "the direction")
        dtype = torch.float64 if flat.dtype == torch.float64 else torch.float32
        key = (dtype, flat.device, part[0], len(part))
        if key not in vectors:
            rows = directions.matrix[part[0] : part[0] + len(part)]  # parts are consecutive
            vectors[key] = torch.from_numpy(rows.T.copy()).to(flat.device, dtype)
        return flat.to(dtype) @ vectors[key]

    return [
        UnitGroup(
            name="direction",
            kind="direction",
            site=site,
            unit_site=hook,
            indices=list(range(directions.matrix.shape[0])),
            width=directions.matrix.shape[0],
            part=chunk,
            hook_point=f"{site.name} ({site.hook_point})",
            compute=compute,
            extra={"direction": directions.provenance()},
        )
    ]
