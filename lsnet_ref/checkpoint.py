"""Checkpoints in PyTorch's zip format, .npz and .safetensors, read without torch and without running code.

A `torch.save` file is a zip archive holding `<name>/data.pkl`, a pickle whose tensors point at raw
little-endian storages `<name>/data/<key>`. The pickle is read by `torch_pickle`, an interpreter
that can build data and nothing else. Every size a file declares is checked before anything is read
or allocated, and a load may take at most 64 MiB plus 4 times the file's size, so that a small
crafted file cannot claim gigabytes. Writing emits the same layout with a small pickle writer of
our own, so that `torch.load(path, weights_only=True)` reads it back. `.safetensors` files (the
format of timm and Hugging Face, which holds tensors only) go through the `safetensors` package.
"""
import ast
import contextlib
import io
import math
import os
import re
import reprlib
import secrets
import struct
import zipfile
import zlib

import numpy as np

from . import torch_pickle
from .torch_pickle import STORAGE_DTYPES

__all__ = [
    "CheckpointError", "CheckpointWriteError", "load", "save", "load_checkpoint", "save_checkpoint",
    "extract_state_dict", "remove_stale_temporaries",
]

STORAGE_NAMES = {np.dtype(dtype): name for name, dtype in STORAGE_DTYPES.items()}
MODEL_KEYS = ("model", "model_ema", "state_dict")
MEMORY_BASE = 64 << 20
MEMORY_PER_FILE_BYTE = 4
CHUNK = 1 << 20
NPY_MAX_HEADER = 10000
# .npy "descr" strings of the dtypes an .npz checkpoint may hold, both byte orders.
NPY_DTYPES = {
    np.dtype(code).newbyteorder(order).str: np.dtype(code).newbyteorder(order)
    for code in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16")
    for order in "<>"
}
TEMPORARY_NAME = re.compile(r"\.tmp-[0-9a-z_]{8}.+")
SAFETENSORS_EXTRA = "pip install 'lsnet-ref[safetensors]'"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or written: missing, truncated, corrupt, or holding code."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a checkpoint failed (disk full, read-only or missing folder); the previous file is untouched."""


# ----- reading -----
class _Budget:
    """The memory one load may take: MEMORY_BASE plus MEMORY_PER_FILE_BYTE times the file's size."""

    def __init__(self, path):
        self.path, self.size = path, os.path.getsize(path)
        self.limit = self.left = MEMORY_BASE + MEMORY_PER_FILE_BYTE * self.size

    def charge(self, nbytes, what):
        if nbytes > self.left:
            raise CheckpointError(
                f"{self.path}: {what} would take the load past {self.limit} bytes, the most that a file of "
                f"{self.size} bytes may take (64 MiB plus 4 times its size)"
            )
        self.left -= nbytes


def _member(archive, name, path):
    """The ZipInfo of `name`, which may only be stored or deflated (bounded decompression)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path}: has no record {name!r}") from None
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
        raise CheckpointError(f"{path}: record {name!r} is encrypted or compressed with method "
                              f"{info.compress_type}; only stored and deflated records are read")
    return info


def _read(stream, nbytes, path, name):
    """Exactly `nbytes` from `stream` into a new uint8 array, in chunks (no larger buffer in between)."""
    buffer = np.empty(nbytes, np.uint8)
    view, filled = memoryview(buffer), 0
    while filled < nbytes:
        count = stream.readinto(view[filled : filled + CHUNK])
        if not count:
            raise CheckpointError(f"{path}: record {name!r} is truncated")
        filled += count
    return buffer


def _read_member(archive, info, path):
    with archive.open(info) as stream:
        return _read(stream, info.file_size, path, info.filename)


def _read_torch_zip(path, budget):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: not a PyTorch zip checkpoint (no single <name>/data.pkl record)")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names:
            info = _member(archive, f"{prefix}byteorder", path)
            if info.file_size > 16 or _read_member(archive, info, path).tobytes() != b"little":
                raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        info = _member(archive, pickles[0], path)
        budget.charge(info.file_size, "the pickle record")
        data = _read_member(archive, info, path)

        def storage(dtype, key, numel):
            info = _member(archive, f"{prefix}data/{key}", path)
            if info.file_size != numel * dtype.itemsize:
                raise CheckpointError(f"{path}: storage {info.filename!r} holds {info.file_size} bytes; "
                                      f"{numel} x {dtype.itemsize} expected")
            budget.charge(info.file_size, f"storage {info.filename!r}")
            return _read_member(archive, info, path).view(dtype.newbyteorder("<")).astype(dtype, copy=False)

        try:
            return torch_pickle.load(data, storage, budget.charge)
        except torch_pickle.PickleRefused as error:
            raise CheckpointError(f"{path}: {error}") from None


def _npy_header(stream, path, name):
    """(shape, fortran_order, dtype) from the header of a .npy record, refusing all but numeric dtypes."""
    magic = _read(stream, 8, path, name).tobytes()
    if magic[:6] != b"\x93NUMPY" or magic[6:] not in (b"\x01\x00", b"\x02\x00", b"\x03\x00"):
        raise CheckpointError(f"{path}: record {name!r} is not a .npy array")
    length_format, encoding = ("<H", "latin1") if magic[6] == 1 else ("<I", "latin1" if magic[6] == 2 else "utf-8")
    length = struct.unpack(length_format, _read(stream, struct.calcsize(length_format), path, name))[0]
    if length > NPY_MAX_HEADER:
        raise CheckpointError(f"{path}: record {name!r} has a header of {length} bytes")
    try:
        header = ast.literal_eval(_read(stream, length, path, name).tobytes().decode(encoding))
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        header = None
    if not (type(header) is dict and set(header) == {"descr", "fortran_order", "shape"}
            and type(header["descr"]) is str and header["descr"] in NPY_DTYPES
            and type(header["fortran_order"]) is bool and type(header["shape"]) is tuple
            and all(type(n) is int and n >= 0 for n in header["shape"])):
        raise CheckpointError(f"{path}: record {name!r} is not a .npy array of a numeric dtype (object and "
                              "structured dtypes are refused)")
    return header["shape"], header["fortran_order"], NPY_DTYPES[header["descr"]]


def _read_npz(path, budget):
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if not name.endswith(".npy"):
                raise CheckpointError(f"{path}: record {name!r} is not a .npy array")
            with archive.open(_member(archive, name, path)) as stream:
                shape, fortran_order, dtype = _npy_header(stream, path, name)
                nbytes = math.prod(shape) * dtype.itemsize
                if info.file_size != stream.tell() + nbytes:
                    raise CheckpointError(f"{path}: record {name!r} declares an array of shape {shape} "
                                          f"({nbytes} bytes) but holds {info.file_size - stream.tell()}")
                budget.charge(nbytes, f"record {name!r}")
                data = _read(stream, nbytes, path, name)
            arrays[name[: -len(".npy")]] = data.view(dtype).reshape(shape, order="F" if fortran_order else "C")
    return arrays


def _safetensors(path):
    try:
        import safetensors.numpy
    except ImportError:
        raise CheckpointError(f"{path}: .safetensors files need the safetensors package: {SAFETENSORS_EXTRA}") from None
    return safetensors


def _read_safetensors(path):
    safetensors = _safetensors(path)
    try:
        return safetensors.numpy.load_file(path)
    # The package raises TypeError or AttributeError for dtypes NumPy lacks (bfloat16, float8).
    except (safetensors.SafetensorError, OSError, ValueError, TypeError, AttributeError, MemoryError) as error:
        raise CheckpointError(
            f"{path}: corrupt or unreadable .safetensors file ({type(error).__name__}: {error})"
        ) from error


def load(path):
    """The object stored at `path` by `torch.save` or `save`: containers with ndarrays for tensors.

    `.npz` and `.safetensors` files give a flat {name: ndarray}. Raises CheckpointError (naming the
    file) for a missing, truncated or corrupt file, one whose pickle refers to anything but tensors
    and plain containers, or one whose declared sizes would take more memory than its size allows.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    try:
        budget = _Budget(path)
        return _read_npz(path, budget) if path.endswith(".npz") else _read_torch_zip(path, budget)
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError(f"{path}: not enough memory to load it") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error, NotImplementedError,
            RuntimeError, OverflowError) as error:
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
        if type(name) is not str or not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: entry {reprlib.repr(name)} is a {type(value).__name__}, not a named tensor")
        arrays[name[len("module."):] if name.startswith("module.") else name] = value
    return arrays


def load_checkpoint(path, key=None):
    """{name: ndarray} of a model checkpoint: the authors' PyTorch files or our .pth / .npz / .safetensors files.

    Args:
        path: a `torch.save` zip file (a bare state dict or a dict holding "model" / "model_ema"),
            an .npz archive or a .safetensors file.
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
    """Write through a temporary file in the same folder, then rename it over `path`.

    The temporary file is created with mode 0o666 less the umask, as `open` would (mkstemp's 0o600
    would make every checkpoint private). An OSError (disk full, read-only or missing folder)
    removes it and raises CheckpointWriteError naming `path`; the previous file stays as it was.
    """
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".tmp-{secrets.token_hex(4)}{name}")  # matches TEMPORARY_NAME
    created = False
    try:
        # O_BINARY: no newline translation on Windows.
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        created = True
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        if isinstance(error, OSError):
            failure = CheckpointWriteError(f"{path}: cannot write the checkpoint ({error.strerror or error}); "
                                           "the previous file, if any, is untouched")
            failure.errno = error.errno
            raise failure from error
        raise


def remove_stale_temporaries(folder):
    """Delete the temporary files (.tmp-XXXXXXXX<name>) that interrupted saves left in `folder`.

    Returns the removed paths. Call it only while nothing is saving into `folder`: a save in
    progress has a temporary file of the same form.
    """
    try:
        with os.scandir(folder) as entries:
            stale = [entry.path for entry in entries
                     if TEMPORARY_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    for path in stale:
        os.unlink(path)
    return sorted(stale)


def _flat_arrays(obj, path):
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()):
        raise TypeError(f"save: {os.path.basename(path)} holds a flat {{name: ndarray}} dict")
    return obj


def save(obj, path):
    """Store `obj` (nested dict/list/tuple of numbers, strings, None and ndarrays) at `path`.

    A `.npz` or `.safetensors` path takes a flat {name: ndarray} dict; any other path gets PyTorch's
    zip format, which `torch.load(path, weights_only=True)` reads with ndarrays as tensors. The
    write is atomic: a crash or a full disk leaves the previous file intact.
    """
    path = os.fspath(path)
    if path.endswith(".npz"):
        arrays = _flat_arrays(obj, path)
        _write_atomically(path, lambda stream: np.savez(stream, **arrays))
        return
    if path.endswith(".safetensors"):
        arrays = _flat_arrays(obj, path)
        data = _safetensors(path).numpy.save({name: np.asarray(a, order="C") for name, a in arrays.items()})
        _write_atomically(path, lambda stream: stream.write(data))
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
    """Write a model's state dict ({name: ndarray or Tensor}) for this library and for torch.load.

    The suffix picks the format: .npz, .safetensors, anything else PyTorch's zip format.
    """
    arrays = {name: np.asarray(value.numpy() if hasattr(value, "numpy") else value)
              for name, value in state_dict.items()}
    save(arrays, path)
