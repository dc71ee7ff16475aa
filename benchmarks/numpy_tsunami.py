"""A plain single-run numpy implementation of the tsunami scheme (the speed baseline).

Same equations and discretisation as :mod:`xldensf.simulators.tsunami` (Arakawa C grid,
flux-form continuity, forward-backward time stepping, walls), written the way one would
write it directly in numpy, one run at a time. ``benchmarks/simulators.py`` checks that it
gives the same answer as the torch simulator and compares their speeds.

Run ``python benchmarks/numpy_tsunami.py`` for a quick self-check against the torch model.
"""

from __future__ import annotations

import numpy as np


def numpy_tsunami(
    x0: float,
    y0: float,
    *,
    nx: int = 150,
    ny: int = 150,
    length_x: float = 1.0e6,
    length_y: float = 1.0e6,
    depth: np.ndarray | float = 100.0,
    gravity: float = 9.81,
    f0: float = 1.0e-4,
    beta: float = 2.0e-11,
    dt: float,
    steps: int,
    output_every: int,
    bump_amplitude: float = 1.0,
    bump_sigma: float = 5.0e4,
) -> np.ndarray:
    """Simulate one run; return frames ``(n_frames, 3, ny, nx)`` of ``u, v, eta`` at centres.

    Frames are the initial state and every ``output_every`` steps after it.
    """
    dx, dy = length_x / nx, length_y / ny
    x = (np.arange(nx) + 0.5) * dx - 0.5 * length_x
    y = (np.arange(ny) + 0.5) * dy - 0.5 * length_y
    depth = np.broadcast_to(np.asarray(depth, dtype=np.float64), (ny, nx))
    depth_u = 0.5 * (depth[:, 1:] + depth[:, :-1])
    depth_v = 0.5 * (depth[1:, :] + depth[:-1, :])
    f_centre = f0 + beta * y
    f_u = f_centre[:, None]
    f_v = (0.5 * (f_centre[1:] + f_centre[:-1]))[:, None]

    eta = bump_amplitude * np.exp(
        -((x[None, :] - x0) ** 2 + (y[:, None] - y0) ** 2) / (2 * bump_sigma**2)
    )
    u = np.zeros((ny, nx + 1))  # east/west faces, walls included (kept at zero)
    v = np.zeros((ny + 1, nx))  # north/south faces, walls included

    def centred() -> np.ndarray:
        return np.stack([0.5 * (u[:, 1:] + u[:, :-1]), 0.5 * (v[1:, :] + v[:-1, :]), eta.copy()])

    frames = [centred()]
    for step in range(1, steps + 1):
        flux_x = np.zeros_like(u)
        flux_y = np.zeros_like(v)
        flux_x[:, 1:-1] = u[:, 1:-1] * (depth_u + 0.5 * (eta[:, 1:] + eta[:, :-1]))
        flux_y[1:-1, :] = v[1:-1, :] * (depth_v + 0.5 * (eta[1:, :] + eta[:-1, :]))
        eta = eta - dt * (np.diff(flux_x, axis=1) / dx + np.diff(flux_y, axis=0) / dy)
        v_at_u = 0.25 * (v[1:, 1:] + v[1:, :-1] + v[:-1, 1:] + v[:-1, :-1])
        u[:, 1:-1] += dt * (f_u * v_at_u[:, :] - gravity * np.diff(eta, axis=1) / dx)
        u_at_v = 0.25 * (u[1:, 1:] + u[1:, :-1] + u[:-1, 1:] + u[:-1, :-1])
        v[1:-1, :] -= dt * (f_v * u_at_v + gravity * np.diff(eta, axis=0) / dy)
        if step % output_every == 0:
            frames.append(centred())
    return np.stack(frames)


if __name__ == "__main__":
    import torch

    import xldensf as xl

    model = xl.simulator("tsunami", preset="small", n_outputs=6, progress=False)
    config = model.config
    reference = model.trajectory(torch.tensor([[-2.0e5, -1.5e5]]))[0].numpy()
    plain = numpy_tsunami(-2.0e5, -1.5e5, nx=config.nx, ny=config.ny, dt=model.dt,
                          steps=(config.n_outputs - 1) * config.output_every,
                          output_every=config.output_every)
    print("max |numpy - torch| =", np.abs(plain - reference).max())
