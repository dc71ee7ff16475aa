"""A fused C++ time step of the tsunami scheme, compiled once per machine and cached on disk.

:func:`xldensf.simulators.tsunami.forward_backward_step` in torch runs about 20 separate
tensor operations per step, each a pass over the batch in memory. This module holds the
same step written as one C++ sweep over the rows of each run (row ``j`` of ``eta``, then of
``u``, then the ``v`` faces between rows ``j - 1`` and ``j``, all of which are still in
cache), parallel over the runs of the batch with ``at::parallel_for``. Every arithmetic
operation is the one of the torch kernel, in the same order and the same precision, and
the code is compiled with ``-ffp-contract=off`` (no fused multiply-adds), so the results
are bit-identical to the torch kernel on CPU.

The extension is built with :func:`torch.utils.cpp_extension.load_inline` (a C++ compiler
and ``ninja``) into ``$TORCH_EXTENSIONS_DIR/<name>`` (default
``~/.cache/torch_extensions/<name>``), where ``<name>`` carries a hash of the source, the
flags, the torch and Python versions and the CPU model; a later process loads the cached
library in well under a second. :func:`fused_step` returns ``None`` until a library is
available; :func:`build` (or ``kernel="fused"``, or :func:`build_report`, which ``make``
runs at install time) builds it. No build runs in the background: one was measured to make
a first call three times slower than the torch kernel on 2 busy cores.

Examples
--------
>>> from xldensf.simulators import tsunami_kernel
>>> tsunami_kernel.extension_name().startswith("xldensf_tsunami_")
True
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

__all__ = [
    "build",
    "build_report",
    "build_directory",
    "build_error",
    "build_seconds",
    "extension_name",
    "fused_step",
]

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <vector>

template <typename T>
static void step_run(const T* __restrict u, const T* __restrict v, const T* __restrict eta,
                     const T* __restrict depth_u, const T* __restrict depth_v,
                     const T* __restrict cor_u, const T* __restrict cor_v,
                     T* __restrict nu, T* __restrict nv, T* __restrict neta,
                     int64_t ny, int64_t nx, T dt, T dx, T dy, T g_dx, T g_dy) {
    const int64_t su = nx + 1, sv = nx, se = nx + 2;  // row strides of u, v, eta (halo)
    const T half = T(0.5), quarter = T(0.25);
    // walls and halo: zero
    for (int64_t i = 0; i < se; ++i) { neta[i] = T(0); neta[(ny + 1) * se + i] = T(0); }
    for (int64_t i = 0; i < sv; ++i) { nv[i] = T(0); nv[ny * sv + i] = T(0); }
    for (int64_t j = 0; j < ny; ++j) {
        const T* ur = u + j * su;
        const T* vr = v + j * sv;        // v faces south of row j
        const T* vn = vr + sv;           // v faces north of row j
        const T* er = eta + (j + 1) * se;  // cells of row j (halo column first)
        const T* es = er - se;
        const T* en = er + se;
        const T* dur = depth_u + j * su;
        const T* dvr = depth_v + j * sv;
        const T* dvn = dvr + sv;
        T* ner = neta + (j + 1) * se;
        ner[0] = T(0); ner[nx + 1] = T(0);
        // continuity: eta^{n+1} = eta - dt * (dflux_x / dx + dflux_y / dy)
        for (int64_t i = 0; i < nx; ++i) {
            const T fx_e = ur[i + 1] * (dur[i + 1] + half * (er[i + 2] + er[i + 1]));
            const T fx_w = ur[i] * (dur[i] + half * (er[i + 1] + er[i]));
            const T fy_n = vn[i] * (dvn[i] + half * (en[i + 1] + er[i + 1]));
            const T fy_s = vr[i] * (dvr[i] + half * (er[i + 1] + es[i + 1]));
            const T divergence = (fx_e - fx_w) / dx + (fy_n - fy_s) / dy;
            ner[i + 1] = er[i + 1] - dt * divergence;
        }
        // u momentum with the new eta and the old v
        T* nur = nu + j * su;
        nur[0] = T(0); nur[nx] = T(0);
        const T fu = cor_u[j];
        for (int64_t i = 1; i < nx; ++i) {
            const T v_at_u = quarter * ((vn[i] + vr[i]) + (vn[i - 1] + vr[i - 1]));
            nur[i] = ur[i] + dt * (fu * v_at_u - g_dx * (ner[i + 1] - ner[i]));
        }
        // v momentum on the faces between rows j - 1 and j, with the new eta and new u
        if (j > 0) {
            const T* nus = nur - su;
            const T* nes = ner - se;
            T* nvr = nv + j * sv;
            const T fv = cor_v[j - 1];
            for (int64_t i = 0; i < nx; ++i) {
                const T u_at_v = quarter * ((nur[i + 1] + nur[i]) + (nus[i + 1] + nus[i]));
                nvr[i] = vr[i] - dt * (fv * u_at_v + g_dy * (ner[i + 1] - nes[i + 1]));
            }
        }
    }
}

std::vector<torch::Tensor> step(torch::Tensor u, torch::Tensor v, torch::Tensor eta,
                                 torch::Tensor depth_u, torch::Tensor depth_v,
                                 torch::Tensor cor_u, torch::Tensor cor_v,
                                 double dt, double dx, double dy, double g_dx, double g_dy) {
    TORCH_CHECK(eta.dim() == 3 && u.dim() == 3 && v.dim() == 3, "u, v, eta: 3-d tensors");
    const int64_t batch = eta.size(0), ny = eta.size(1) - 2, nx = eta.size(2) - 2;
    TORCH_CHECK(u.size(0) == batch && u.size(1) == ny && u.size(2) == nx + 1 &&
                v.size(0) == batch && v.size(1) == ny + 1 && v.size(2) == nx &&
                depth_u.numel() == ny * (nx + 1) && depth_v.numel() == (ny + 1) * nx &&
                cor_u.numel() == ny && cor_v.numel() == ny - 1,
                "shapes: u (b, ny, nx + 1), v (b, ny + 1, nx), eta (b, ny + 2, nx + 2)");
    for (const auto& t : {u, v, eta, depth_u, depth_v, cor_u, cor_v}) {
        TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() &&
                    t.scalar_type() == eta.scalar_type(),
                    "every tensor contiguous, on the CPU, of one dtype");
    }
    auto nu = torch::empty_like(u), nv = torch::empty_like(v), neta = torch::empty_like(eta);
    AT_DISPATCH_FLOATING_TYPES(eta.scalar_type(), "tsunami_step", [&] {
        const scalar_t* pu = u.data_ptr<scalar_t>();
        const scalar_t* pv = v.data_ptr<scalar_t>();
        const scalar_t* pe = eta.data_ptr<scalar_t>();
        scalar_t* qu = nu.data_ptr<scalar_t>();
        scalar_t* qv = nv.data_ptr<scalar_t>();
        scalar_t* qe = neta.data_ptr<scalar_t>();
        const int64_t size_u = ny * (nx + 1), size_v = (ny + 1) * nx, size_e = (ny + 2) * (nx + 2);
        at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
            for (int64_t b = begin; b < end; ++b) {
                step_run<scalar_t>(pu + b * size_u, pv + b * size_v, pe + b * size_e,
                                   depth_u.data_ptr<scalar_t>(), depth_v.data_ptr<scalar_t>(),
                                   cor_u.data_ptr<scalar_t>(), cor_v.data_ptr<scalar_t>(),
                                   qu + b * size_u, qv + b * size_v, qe + b * size_e, ny, nx,
                                   scalar_t(dt), scalar_t(dx), scalar_t(dy), scalar_t(g_dx),
                                   scalar_t(g_dy));
            }
        });
    });
    return {nu, nv, neta};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("step", &step, "fused tsunami step"); }
"""

#: Compiler flags: optimised, vectorised for the building machine, no contraction into fused
#: multiply-adds (which would round differently from the torch kernel).
_FLAGS = ("-O3", "-march=native", "-ffp-contract=off")

#: Age [s] after which a build lock left in the build directory is taken as stale (a
#: cold build took 45-82 s on a loaded 2-core machine).
_STALE_LOCK_S = 600.0

_lock = threading.Lock()  # held while building or loading
_module: ModuleType | None = None
_failed: str | None = None
_build_seconds: float | None = None


def _processor() -> str:
    """The CPU model (``/proc/cpuinfo``'s first model name, else ``platform.machine()``)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


@functools.cache  # fixed for the process; looked up on every step until a library exists
def extension_name() -> str:
    """Name of the extension: a hash of the source, the flags, the torch and Python
    versions and the CPU model."""
    # the processor too: -march=native code may not run on another CPU of a shared home
    key = "\n".join((_SOURCE, " ".join(_FLAGS), torch.__version__, sys.version,
                     _processor()))
    return "xldensf_tsunami_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def build_directory() -> Path:
    """Where the extension is built and cached: ``$TORCH_EXTENSIONS_DIR/<name>``."""
    base = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(base) / extension_name()


def build_error() -> str | None:
    """Why the extension could not be built in this process (``None``: no failure)."""
    return _failed


def build_seconds() -> float | None:
    """Seconds the last :func:`build` of this process took (``None``: no build, or loaded)."""
    return _build_seconds


def _load_cached() -> ModuleType | None:
    """The cached library of an earlier build, imported directly (no compiler run)."""
    library = build_directory() / f"{extension_name()}.so"
    if not library.is_file():
        return None
    spec = importlib.util.spec_from_file_location(extension_name(), library)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build() -> ModuleType | None:
    """Load the cached extension, or compile it (tens of seconds, once per machine).

    Returns
    -------
    module or None
        The extension, or ``None`` when it cannot be built (no compiler, no ``ninja``); the
        reason is kept and the build is not retried in this process.
    """
    global _module, _failed, _build_seconds
    with _lock:
        if _module is not None or _failed is not None:
            return _module
        try:
            _module = _load_cached()
            if _module is None:
                from torch.utils.cpp_extension import load_inline

                start = time.perf_counter()
                directory = build_directory()
                directory.mkdir(parents=True, exist_ok=True)
                # a process killed during its build leaves torch's lock file behind, on which
                # every later build would wait
                lock = directory / "lock"
                if lock.is_file() and time.time() - lock.stat().st_mtime > _STALE_LOCK_S:
                    lock.unlink(missing_ok=True)
                _module = load_inline(extension_name(), cpp_sources=[_SOURCE],
                                      extra_cflags=list(_FLAGS), build_directory=str(directory),
                                      verbose=False)
                _build_seconds = time.perf_counter() - start
        except Exception as error:  # no compiler, no ninja, a failed build: fall back
            _failed = f"{type(error).__name__}: {error}"
        return _module


def fused_step(*, wait: bool) -> Any:
    """The fused step function, or ``None`` while it is not available.

    Parameters
    ----------
    wait
        ``True``: load or build it now (blocking). ``False``: return it only if it is
        already loaded, or cached on disk; otherwise return ``None`` (no build: a build
        in the background was measured to slow the torch kernel down 3x on 2 busy cores).

    Returns
    -------
    callable or None
        ``step(u, v, eta, depth_u, depth_v, coriolis_u, coriolis_v, dt, dx, dy, g / dx,
        g / dy) -> [u, v, eta]`` on contiguous CPU tensors of one floating dtype.
    """
    if _module is None and _failed is None:
        if wait or (build_directory() / f"{extension_name()}.so").is_file():
            build()
    return None if _module is None else _module.step



def build_report() -> str:
    """Build (or load) the extension; a sentence saying where it is, or why it could not be
    built (``make`` prints it at install time).

    Returns
    -------
    str
        The sentence; the fused step is available unless it says "not built".
    """
    if build() is None:
        return (f"xldensf: the fused tsunami step was not built ({build_error()}); "
                "the torch step is used")
    seconds = build_seconds()
    return (f"xldensf: fused tsunami step ready in {build_directory()}"
            + ("" if seconds is None else f" (built in {seconds:.0f} s)"))
