"""Checkpoints in PyTorch's zip format (and .npz) without importing torch.

A `torch.save` file is a zip archive holding `<name>/data.pkl`, a pickle whose tensors point at raw
little-endian storages `<name>/data/<key>`. Reading uses an unpickler that knows only the globals a
tensor checkpoint needs and refuses every other one, so a checkpoint can never run code. Writing
emits the same layout with a small pickle writer of our own, so that
`torch.load(path, weights_only=True)` reads it back.
"""
import argparse
import io
import os
import pickle
import struct
import tempfile
import zipfile
from collections import OrderedDict

import numpy as np

__all__ = ["CheckpointError", "load", "save", "load_checkpoint", "save_checkpoint", "extract_state_dict"]

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
STORAGE_NAMES = {np.dtype(dtype): name for name, dtype in STORAGE_DTYPES.items()}
MODEL_KEYS = ("model", "model_ema", "state_dict")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: missing, truncated, corrupt, or holding code."""


# ----- reading -----
def _rebuild_tensor(storage, offset, size, stride, *unused):
    """An owning array of `size` and element `stride` over `storage` (bounds-checked)."""
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointError(f"bad tensor layout: offset {offset}, size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise CheckpointError(f"tensor of size {size} at offset {offset} overruns its storage of {storage.size}")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], size, tuple(s * storage.itemsize for s in stride), writeable=False
    )
    return np.array(view, order="C")


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


def _numpy_scalar(dtype, data):
    return np.frombuffer(data, dtype=dtype, count=1)[0]


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("argparse", "Namespace"): argparse.Namespace,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): lambda text, encoding="latin1": text.encode(encoding),
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, archive, prefix, path):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path, self.storages = archive, prefix, path, {}

    def find_class(self, module, name):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise CheckpointError(
                f"{self.path}: refuses the global {module}.{name}: a checkpoint may hold only tensors "
                "and plain containers (this file could run code when unpickled)"
            )
        return allowed

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.path}: storage {key!r} has an unknown type")
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            dtype = storage_type.dtype.newbyteorder("<")
            if len(raw) != numel * dtype.itemsize:
                raise CheckpointError(
                    f"{self.path}: storage {key!r} holds {len(raw)} bytes; {numel} x {dtype.itemsize} expected"
                )
            self.storages[key] = np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype, copy=False)
        return self.storages[key]


def _read_torch_zip(path):
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: not a PyTorch zip checkpoint (no single <name>/data.pkl record)")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        return _RestrictedUnpickler(archive.read(pickles[0]), archive, prefix, path).load()


def load(path):
    """The object stored at `path` by `torch.save` or `save`: containers with ndarrays for tensors.

    Raises CheckpointError (naming the file) for a missing, truncated or corrupt file, or one whose
    pickle refers to anything but tensors and plain containers.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
            raise CheckpointError(f"{path}: unreadable .npz checkpoint ({error})") from error
    try:
        return _read_torch_zip(path)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError, OSError, ValueError, struct.error) as error:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(error).__name__}: {error})") from error


def extract_state_dict(checkpoint, key=None, path="checkpoint"):
    """The model's {name: ndarray} from a loaded checkpoint, without any `module.` prefix.

    `checkpoint` is a bare state dict or a dict holding one under "model", "model_ema" or
    "state_dict" (the first present, unless `key` names one).
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: holds a {type(checkpoint).__name__}, not a state dict")
    if key is not None:
        if key not in checkpoint:
            raise CheckpointError(f"{path}: has no key {key!r}; it has {sorted(map(str, checkpoint))}")
        state = checkpoint[key]
    else:
        state = next((checkpoint[k] for k in MODEL_KEYS if isinstance(checkpoint.get(k), dict)), checkpoint)
    arrays = {}
    for name, value in state.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
        arrays[name[len("module."):] if name.startswith("module.") else name] = value
    return arrays


def load_checkpoint(path, key=None):
    """{name: ndarray} of a model checkpoint: the authors' PyTorch files or our .pth / .npz files.

    Args:
        path: a `torch.save` zip file (a bare state dict or a dict holding "model" / "model_ema"),
            or an .npz archive.
        key: which entry of a dict checkpoint to take (default: "model", then "model_ema").
    """
    return extract_state_dict(load(path), key, os.fspath(path))


# ----- writing -----
class _TorchPickleWriter:
    """Pickle protocol 2 for None, bool, int, float, str, tuple, list, dict and ndarray (as a tensor)."""

    def __init__(self):
        self.out, self.storages = io.BytesIO(), []

    def dump(self, obj):
        self.out.write(b"\x80\x02")
        self._write(obj)
        self.out.write(b".")
        return self.out.getvalue()

    def _global(self, module, name):
        self.out.write(b"c" + f"{module}\n{name}\n".encode())

    def _str(self, text):
        data = text.encode("utf-8")
        self.out.write(b"X" + struct.pack("<I", len(data)) + data)

    def _int(self, value):
        if 0 <= value < 256:
            self.out.write(b"K" + bytes([value]))
        elif -(2**31) <= value < 2**31:
            self.out.write(b"J" + struct.pack("<i", value))
        else:
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out.write(b"\x8a" + bytes([len(data)]) + data)

    def _tuple(self, items):
        self.out.write(b"(")
        for item in items:
            self._write(item)
        self.out.write(b"t")

    def _tensor(self, array):
        if not array.flags.c_contiguous:
            array = array.copy(order="C")
        storage_name = STORAGE_NAMES.get(array.dtype)
        if storage_name is None:
            raise TypeError(f"save: arrays of dtype {array.dtype} have no PyTorch storage type")
        key = str(len(self.storages))
        self.storages.append(array.astype(array.dtype.newbyteorder("<"), copy=False))
        strides = tuple(s // array.itemsize for s in array.strides)
        self._global("torch._utils", "_rebuild_tensor_v2")
        self.out.write(b"(")
        self.out.write(b"(")  # persistent id ('storage', type, key, location, numel)
        self._str("storage")
        self._global("torch", storage_name)
        self._str(key)
        self._str("cpu")
        self._int(array.size)
        self.out.write(b"tQ")
        self._int(0)
        self._tuple(array.shape)
        self._tuple(strides)
        self.out.write(b"\x89")  # requires_grad False
        self._global("collections", "OrderedDict")
        self.out.write(b")R")  # empty backward hooks
        self.out.write(b"tR")

    def _write(self, obj):
        if obj is None:
            self.out.write(b"N")
        elif isinstance(obj, (bool, np.bool_)):
            self.out.write(b"\x88" if obj else b"\x89")
        elif isinstance(obj, (int, np.integer)):
            self._int(int(obj))
        elif isinstance(obj, (float, np.floating)):
            self.out.write(b"G" + struct.pack(">d", float(obj)))
        elif isinstance(obj, str):
            self._str(obj)
        elif isinstance(obj, np.ndarray):
            self._tensor(obj)
        elif isinstance(obj, tuple):
            self._tuple(obj)
        elif isinstance(obj, list):
            self.out.write(b"](")
            for item in obj:
                self._write(item)
            self.out.write(b"e")
        elif isinstance(obj, dict):
            self.out.write(b"}(")
            for name, value in obj.items():
                self._write(name)
                self._write(value)
            self.out.write(b"u")
        else:
            raise TypeError(f"save: cannot store a {type(obj).__name__}; use containers, numbers, strings, arrays")


def _write_atomically(path, write):
    """Write through a temporary file in the same folder, then rename over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def save(obj, path):
    """Store `obj` (nested dict/list/tuple of numbers, strings, None and ndarrays) at `path`.

    A `.npz` path takes a flat {name: ndarray} dict; any other path gets PyTorch's zip format, which
    `torch.load(path, weights_only=True)` reads with ndarrays as tensors. The write is atomic: a
    crash leaves the previous file intact.
    """
    path = os.fspath(path)
    if path.endswith(".npz"):
        if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
            raise TypeError("save: an .npz checkpoint holds a flat {name: ndarray} dict")
        _write_atomically(path, lambda stream: np.savez(stream, **obj))
        return
    writer = _TorchPickleWriter()
    data = writer.dump(obj)
    prefix = os.path.splitext(os.path.basename(path))[0] or "archive"

    def write(stream):
        with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(f"{prefix}/data.pkl", data)
            archive.writestr(f"{prefix}/byteorder", "little")
            for key, array in enumerate(writer.storages):
                archive.writestr(f"{prefix}/data/{key}", array.tobytes())
            archive.writestr(f"{prefix}/version", "3\n")

    _write_atomically(path, write)


def save_checkpoint(state_dict, path):
    """Write a model's state dict ({name: ndarray or Tensor}) for this library and for torch.load."""
    arrays = {name: np.asarray(value.numpy() if hasattr(value, "numpy") else value) for name, value in state_dict.items()}
    save(arrays, path)

