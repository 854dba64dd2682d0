"""Output files written whole or not at all: through a temporary file in the same folder, then renamed."""
import os
import tempfile

import numpy as np

__all__ = ["save_array", "write_atomically"]


def write_atomically(path, write):
    """Call write(stream) on a temporary file beside `path`, then rename it over `path`, so that `path` holds
    either its previous content or the complete new one; on an error the temporary file is removed."""
    folder, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the figures are not
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def save_array(path, array):
    """`array` as an .npy file at `path`."""
    write_atomically(path, lambda stream: np.save(stream, array))
