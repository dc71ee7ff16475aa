"""The station observation operator: bilinear interpolation as a sparse torch matrix.

:class:`InterpolationOperator` maps gridded fields ``(batch, *grid)`` to station values
``(batch, n_stations)``: bilinear in the grid coordinates (linear in 1-D), periodic where
the domain is periodic, differentiable and device-agnostic. The filters use it as the
observation operator ``H``.

Examples
--------
>>> import torch
>>> geometry = GridGeometry.from_coordinates({"x": [0.0, 1.0]}, {"x": {"axis": "X"}})
>>> InterpolationOperator.from_grid(geometry, [[0.5]])(torch.tensor([2.0, 4.0])).tolist()
[3.0]
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from ..errors import DataError, check_positive_int, expected_found
from .grid import GridGeometry

__all__ = ["InterpolationOperator"]


class InterpolationOperator:
    """Sparse linear observation operator: gridded fields -> station values.

    Bilinear interpolation in the grid coordinates (linear on a 1-D grid), periodic on
    periodic axes. The matrix is a torch sparse COO tensor of shape
    ``(n_stations, n_grid_points)`` with at most ``2 ** n_axes`` entries per row (exact
    zeros are dropped, so a NaN grid value reaches only the stations whose stencil uses
    it). Stations with a NaN position have an empty row and observe NaN.

    Parameters
    ----------
    matrix
        Sparse ``(n_stations, n_grid_points)`` tensor (float64).
    grid_shape
        Shape of one field.
    missing
        Boolean ``(n_stations,)``: stations that observe NaN.

    Examples
    --------
    >>> import torch
    >>> grid = GridGeometry.from_coordinates({"k": [0, 1, 2, 3]},
    ...                                      {"k": {"axis": "X", "units": "1"}}, periodic="X")
    >>> H = InterpolationOperator.from_grid(grid, [[0.25], [3.5]])
    >>> H(torch.tensor([[0.0, 4.0, 8.0, 12.0]])).tolist()  # 3.5 wraps between 12 and 0
    [[1.0, 6.0]]
    """

    def __init__(self, matrix: torch.Tensor, grid_shape: tuple[int, ...],
                 missing: torch.Tensor | None = None) -> None:
        self.matrix = matrix.coalesce()
        self.grid_shape = tuple(grid_shape)
        n_stations = self.matrix.shape[0]
        self.missing = (torch.zeros(n_stations, dtype=torch.bool) if missing is None
                        else missing.to(torch.bool))
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_grid(cls, geometry: GridGeometry, station_positions: Any) -> InterpolationOperator:
        """Build the operator for positions ``(n_stations, n_axes)`` in the grid's units
        and axis order (as :meth:`GridGeometry.station_positions` returns them).

        Positions are wrapped on periodic axes; on bounded axes they must lie inside the
        grid (:class:`~xldensf.errors.DataError` otherwise).
        """
        positions = np.array(station_positions, dtype=np.float64, ndmin=2)
        if positions.ndim != 2 or positions.shape[1] != len(geometry.axes):
            raise DataError(expected_found("station positions shape",
                                           f"(n_stations, {len(geometry.axes)})",
                                           positions.shape))
        missing = np.isnan(positions).any(axis=1)
        filled = np.where(missing[:, None], np.array([a.low for a in geometry.axes]), positions)
        stencils = []
        for i, axis in enumerate(geometry.axes):
            wrapped = axis.wrap(filled[:, i])
            axis.check_inside(wrapped)
            lower, upper, weight = axis.stencil(wrapped)
            stencils.append(((lower, 1.0 - weight), (upper, weight)))
        rows, columns, values = [], [], []
        station_index = np.arange(len(positions))
        for corner in itertools.product(*stencils):
            index = np.ravel_multi_index(tuple(c[0] for c in corner), geometry.shape)
            weight = np.prod([c[1] for c in corner], axis=0)
            keep = (weight != 0.0) & ~missing
            rows.append(station_index[keep])
            columns.append(index[keep])
            values.append(weight[keep])
        indices = torch.as_tensor(np.stack([np.concatenate(rows), np.concatenate(columns)]))
        matrix = torch.sparse_coo_tensor(indices, torch.as_tensor(np.concatenate(values)),
                                         (len(positions), geometry.size), dtype=torch.float64,
                                         check_invariants=True)
        return cls(matrix, geometry.shape, torch.as_tensor(missing))

    @property
    def n_stations(self) -> int:
        """Number of stations (rows of the matrix)."""
        return self.matrix.shape[0]

    def to_dense(self) -> torch.Tensor:
        """The matrix as a dense ``(n_stations, n_grid_points)`` tensor."""
        return self.matrix.to_dense()

    def _on(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dtype, device)
        if key not in self._cache:
            self._cache[key] = (self.matrix.to(dtype=dtype, device=device),
                                self.missing.to(device=device))
        return self._cache[key]

    def __call__(self, fields: torch.Tensor) -> torch.Tensor:
        """Apply to fields ``(..., *grid_shape)``; returns ``(..., n_stations)``.

        Any leading dims (batch, members, variables) are kept, so a state
        ``(batch, n_variables, *grid)`` gives ``(batch, n_variables, n_stations)``.
        Differentiable with respect to ``fields``; runs on their dtype and device.
        """
        n_grid = len(self.grid_shape)
        if tuple(fields.shape[fields.ndim - n_grid:]) != self.grid_shape:
            raise DataError(expected_found("field shape", f"(..., *{self.grid_shape})",
                                           tuple(fields.shape)))
        leading = fields.shape[: fields.ndim - n_grid]
        matrix, missing = self._on(fields.dtype, fields.device)
        flat = fields.reshape(-1, int(np.prod(self.grid_shape)))
        sampled = torch.sparse.mm(matrix, flat.T).T
        sampled = torch.where(missing, torch.full_like(sampled, float("nan")), sampled)
        return sampled.reshape(*leading, self.n_stations)

    def block_diagonal(self, n_variables: int) -> torch.Tensor:
        """Sparse ``(n_variables * n_stations, n_variables * n_grid_points)`` matrix that
        observes a stacked state of ``n_variables`` fields (variable-major order)."""
        n_variables = check_positive_int("n_variables", n_variables)
        indices, values = self.matrix.indices(), self.matrix.values()
        shift = torch.tensor(self.matrix.shape).reshape(2, 1)
        blocks = [indices + v * shift for v in range(n_variables)]
        size = (n_variables * self.matrix.shape[0], n_variables * self.matrix.shape[1])
        return torch.sparse_coo_tensor(torch.cat(blocks, dim=1), values.repeat(n_variables),
                                       size, check_invariants=True).coalesce()

    def selection(self, variable_indices: list[int], n_state: int) -> torch.Tensor:
        """Sparse ``(len(variable_indices) * n_stations, n_state)`` matrix observing the
        listed variables of a variable-major flattened state of ``n_state`` components
        (fields first; trailing components such as parameters are not observed).

        Examples
        --------
        >>> import torch
        >>> matrix = torch.tensor([[0.5, 0.5, 0.0]]).to_sparse()
        >>> operator = InterpolationOperator(matrix, (3,))
        >>> operator.selection([1], 7).to_dense()
        tensor([[0.0000, 0.0000, 0.0000, 0.5000, 0.5000, 0.0000, 0.0000]])
        """
        n_grid = self.matrix.shape[1]
        indices, values = self.matrix.indices(), self.matrix.values()
        blocks = [indices + torch.tensor([[block * self.n_stations], [variable * n_grid]])
                  for block, variable in enumerate(variable_indices)]
        return torch.sparse_coo_tensor(
            torch.cat(blocks, dim=1), values.repeat(len(variable_indices)),
            (len(variable_indices) * self.n_stations, n_state), check_invariants=True).coalesce()

    def __repr__(self) -> str:
        return (f"InterpolationOperator(n_stations={self.n_stations}, "
                f"grid_shape={self.grid_shape}, nnz={self.matrix._nnz()})")
