"""Kernels behind lsnet_ref's operations: `kernels.cpu` (Numba) and `kernels.cuda` (numba.cuda).

Both namespaces export the same names with the same signatures; `lsnet_ref.backend` picks one.

Inputs are validated once, in the operations (`lsnet_ref/ops`): shapes, dtypes, devices and
parameter ranges. Kernels and their launchers trust them and check nothing.
"""
