"""Moved to :mod:`xldensf.experiments` (kept so that old imports keep working).

``from xldensf.demo import run_demo`` still works; new code imports from
:mod:`xldensf.experiments`. :func:`run_demo` no longer prints: ``xldensf demo`` prints
:func:`xldensf.experiments.demo_report` of its result.

Examples
--------
>>> from xldensf.demo import shipped_model_path
>>> shipped_model_path().name
'tsunami_small.ldensf'
"""

from .experiments import run_demo, shipped_model_path

__all__ = ["run_demo", "shipped_model_path"]
