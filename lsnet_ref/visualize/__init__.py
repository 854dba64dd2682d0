"""Effective receptive fields and LS-convolution maps (the paper's Fig. 4-6): `python -m lsnet_ref.visualize`.

The measurements (`measure`) need NumPy only and are importable here; the figures (`draw`) need the
optional matplotlib extra: pip install 'lsnet-ref[viz]'.
"""
from . import measure
from .measure import *  # noqa: F401,F403

__all__ = measure.__all__
