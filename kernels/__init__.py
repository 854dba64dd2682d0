"""Kernels behind lsnet_ref's operations: `kernels.cpu` (Numba) and `kernels.cuda` (numba.cuda).

Both namespaces export the same names with the same signatures; `lsnet_ref.backend` picks one.
"""
