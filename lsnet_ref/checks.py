"""Type tests for integer and real arguments, shared by the operations and the training code.

Python counts bool as an int; these do not. NumPy's integer and float scalars count.
"""
import numbers

__all__ = ["check_int", "is_int", "is_real"]


def is_int(value, minimum=None):
    """True for an integer that is not a bool and, when `minimum` is given, is >= minimum."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def is_real(value):
    """True for a real number that is not a bool (NaN and infinities included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name, value, minimum):
    """int(value), or ValueError "<name> must be an integer >= <minimum>, got <value>"."""
    if not is_int(value, minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
