"""An interpreter for the pickle inside PyTorch checkpoints that can build data and nothing else.

Like torch/_weights_only_unpickler.py it is a loop over opcodes, not `pickle.Unpickler`: only the
opcodes a state dict needs run, GLOBAL resolves only to the entries of fixed tables, and each entry
checks the types of its arguments. What it builds: dicts, lists, tuples, numbers, strings, bytes,
ndarrays for tensors (bounds-checked copies out of the storages of this load), NumPy scalars of
plain numeric dtypes and argparse.Namespace objects. BUILD applies only to objects made in this
load, and every load makes fresh objects, so a file cannot change what a later load returns.
"""
import argparse
import math
import pickletools
import reprlib
import struct
from collections import OrderedDict

import numpy as np

__all__ = ["STORAGE_DTYPES", "PickleRefused", "load"]

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
# Bytes charged for each object pushed or memoized: a small Python object plus its stack or memo slot.
OBJECT_COST = 128
# The pickle's objects are charged in steps of this many bytes (one call per object would be slow).
CHARGE_STEP = 1 << 20
MAX_DIMS = 32  # NumPy 1's limit
# numpy.dtype(name, False, True) for NumPy scalars: plain numeric types, little-endian.
SCALAR_DTYPES = {
    code: np.dtype("<" + code) for code in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
}
DICT_KEY_TYPES = (str, int, float, bool, bytes, type(None))


class PickleRefused(ValueError):
    """The pickle is malformed or asks for something that a tensor checkpoint never holds."""


def _name(value):
    return f"global {'.'.join(value.key)}" if type(value) is _Global else type(value).__name__


class _Global:
    """What GLOBAL pushes: an inert token for one entry of the tables below."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key


class _Storage:
    """A storage record of this load: a 1-D array that tensors copy their elements from."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array


class _ScalarDtype:
    """numpy.dtype(name, False, True) for a name of SCALAR_DTYPES; BUILD may only confirm its state."""

    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = dtype

    def check_state(self, state):
        expected = (3, "|" if self.dtype.itemsize == 1 else "<", None, None, None, -1, -1, 0)
        same = (type(state) is tuple and len(state) == len(expected)
                and all(type(a) is type(b) for a, b in zip(state, expected)) and state == expected)
        if not same:
            raise PickleRefused(f"the state of NumPy dtype {self.dtype.str} is not that of a plain number type")


def _arguments(name, args, least, most=None):
    if not least <= len(args) <= (least if most is None else most):
        raise PickleRefused(f"{name} takes {least}" + (f" to {most}" if most else "") + f" arguments, not {len(args)}")
    return args


def _index(value, what):
    if type(value) is not int or value < 0:
        raise PickleRefused(f"{what} must be a non-negative int, not {_name(value)} {reprlib.repr(value)}")
    return value


def _shape(value, what):
    if type(value) is not tuple or len(value) > MAX_DIMS:
        raise PickleRefused(f"{what} must be a tuple of at most {MAX_DIMS} ints, not a {_name(value)}")
    return tuple(_index(n, what) for n in value)


def _tensor(load, storage, offset, size, stride):
    """A C-contiguous copy of the `size` elements at `offset` with element `stride` in `storage`."""
    if type(storage) is not _Storage:
        raise PickleRefused(f"a tensor's storage must be a storage record, not a {_name(storage)}")
    array = storage.array
    offset, size, stride = _index(offset, "storage offset"), _shape(size, "size"), _shape(stride, "stride")
    if len(size) != len(stride):
        raise PickleRefused(f"size {size} and stride {stride} differ in length")
    if math.prod(max(n, 1) for n in size) * array.itemsize > np.iinfo(np.intp).max:
        raise PickleRefused(f"size {size} is too large for NumPy")
    numel = math.prod(size)
    if numel == 0:
        return np.zeros(size, array.dtype)
    if any(s == 0 and n > 1 for n, s in zip(size, stride)):
        raise PickleRefused(f"stride {stride} repeats elements of a tensor of size {size} (stride 0 is allowed "
                            "only on dimensions of size 1)")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if numel > array.size or last >= array.size:
        raise PickleRefused(f"tensor of size {size}, stride {stride} at offset {offset} overruns its storage of "
                            f"{array.size} elements")
    load.charge(numel * array.itemsize, f"a tensor of size {size}")
    byte_strides = tuple(s * array.itemsize if n > 1 else 0 for n, s in zip(size, stride))
    view = np.lib.stride_tricks.as_strided(array[offset:], size, byte_strides, writeable=False)
    return np.array(view, order="C")


def _check_hooks(hooks, requires_grad):
    if type(requires_grad) is not bool or not isinstance(hooks, dict):
        raise PickleRefused("a tensor's requires_grad must be a bool and its backward hooks a dict")


def _rebuild_tensor_v2(load, args):
    storage, offset, size, stride, requires_grad, hooks = _arguments("_rebuild_tensor_v2", args, 6, 7)[:6]
    _check_hooks(hooks, requires_grad)
    return _tensor(load, storage, offset, size, stride)


def _rebuild_tensor(load, args):
    return _tensor(load, *_arguments("_rebuild_tensor", args, 4))


def _rebuild_parameter(load, args):
    data, requires_grad, hooks = _arguments("_rebuild_parameter", args, 3)
    if type(data) is not np.ndarray:
        raise PickleRefused(f"a parameter's data must be a tensor, not a {_name(data)}")
    _check_hooks(hooks, requires_grad)
    return data


def _ordered_dict(load, args):
    _arguments("OrderedDict", args, 0)
    return OrderedDict()


def _scalar_dtype(load, args):
    name, align, copy = _arguments("numpy.dtype", args, 3)
    if type(name) is not str or name not in SCALAR_DTYPES or align is not False or copy is not True:
        raise PickleRefused(f"numpy.dtype{reprlib.repr(args)} is not a plain number type")
    return _ScalarDtype(SCALAR_DTYPES[name])


def _scalar(load, args):
    dtype, data = _arguments("numpy scalar", args, 2)
    if type(dtype) is not _ScalarDtype or type(data) is not bytes or len(data) != dtype.dtype.itemsize:
        raise PickleRefused("a NumPy scalar needs a plain number dtype and bytes of its size")
    return np.frombuffer(data, dtype.dtype)[0]


def _encode(load, args):
    """_codecs.encode(text, "latin1"): how protocol 2 stores bytes."""
    text, encoding = _arguments("_codecs.encode", args, 2)
    if type(text) is not str or type(encoding) is not str or encoding not in ("latin1", "latin-1"):
        raise PickleRefused("_codecs.encode is allowed only on text in latin1")
    load.account(len(text))
    try:
        return text.encode("latin1")
    except UnicodeEncodeError as error:
        raise PickleRefused(f"_codecs.encode: {error}") from None


# GLOBAL (module, name) -> what REDUCE calls with the load and the argument tuple.
REDUCERS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("numpy", "dtype"): _scalar_dtype,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("_codecs", "encode"): _encode,
}
# GLOBAL (module, name) -> the class that NEWOBJ instantiates without arguments.
CLASSES = {("argparse", "Namespace"): argparse.Namespace}
# GLOBAL (module, name) -> the dtype of a storage record naming it.
STORAGE_TYPES = {("torch", name): np.dtype(dtype) for name, dtype in STORAGE_DTYPES.items()}


class _Load:
    """One run of the interpreter over one pickle."""

    def __init__(self, data, storage, charge):
        self.data, self.position = memoryview(data), 0
        self.read_storage, self.charge = storage, charge
        self.stack, self.marks, self.memo, self.storages = [], [], {}, {}
        self.cost = 0

    # ----- reading the opcode stream -----
    def take(self, n):
        if self.position + n > len(self.data):
            raise PickleRefused("the pickle is truncated")
        chunk = self.data[self.position : self.position + n]
        self.position += n
        return chunk

    def byte(self):
        if self.position >= len(self.data):
            raise PickleRefused("the pickle is truncated")
        self.position += 1
        return self.data[self.position - 1]

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self):
        end = bytes(self.data[self.position : self.position + 257]).find(b"\n")
        if end < 0:
            raise PickleRefused("a GLOBAL name is unterminated or longer than 256 bytes")
        return self.text(self.take(end + 1)[:-1])

    def text(self, chunk):
        try:
            return str(chunk, "utf-8", "surrogatepass")
        except UnicodeDecodeError as error:
            raise PickleRefused(f"a string is not UTF-8 ({error.reason})") from None

    # ----- the stack -----
    def account(self, nbytes):
        """Counts `nbytes` more for the pickle's objects, before they are made."""
        self.cost += nbytes
        if self.cost >= CHARGE_STEP:
            self.charge(self.cost, "the pickle's objects")
            self.cost = 0

    def push(self, value):
        self.account(OBJECT_COST)
        self.stack.append(value)

    def pop(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise PickleRefused("the pickle pops from an empty stack")
        return self.stack.pop()

    def top(self):
        value = self.pop()
        self.stack.append(value)
        return value

    def pop_mark(self):
        if not self.marks:
            raise PickleRefused("the pickle has no MARK to collect items up to")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def put(self, index):
        self.account(OBJECT_COST)
        self.memo[index] = self.top()

    def get(self, index):
        if index not in self.memo:
            raise PickleRefused(f"the pickle refers to memo entry {index}, which it never stored")
        self.push(self.memo[index])

    def global_(self, module, name):
        key = (module, name)
        if key not in REDUCERS and key not in CLASSES and key not in STORAGE_TYPES:
            raise PickleRefused(
                f"refuses the global {module[:100]}.{name[:100]}: a checkpoint may hold only tensors and plain "
                "containers (this file could run code when unpickled)"
            )
        self.push(_Global(key))

    # ----- building -----
    def set_items(self, target, items):
        if not isinstance(target, dict):
            raise PickleRefused(f"SETITEM(S) on a {_name(target)}")
        if len(items) % 2:
            raise PickleRefused("SETITEMS with a key but no value")
        for key, value in zip(items[::2], items[1::2]):
            if type(key) not in DICT_KEY_TYPES:
                raise PickleRefused(f"a dict key of type {_name(key)}")
            target[key] = value

    def append(self, target, items):
        if type(target) is not list:
            raise PickleRefused(f"APPEND(S) on a {_name(target)}")
        target.extend(items)

    def reduce(self):
        args, function = self.pop(), self.pop()
        reducer = REDUCERS.get(function.key) if type(function) is _Global else None
        if reducer is None or type(args) is not tuple:
            raise PickleRefused(f"REDUCE calls a {_name(function)} with a {_name(args)}; only the allowed "
                                "functions can be called, with a tuple")
        self.push(reducer(self, args))

    def new_object(self):
        args, cls = self.pop(), self.pop()
        if type(cls) is not _Global or cls.key not in CLASSES or type(args) is not tuple or args:
            raise PickleRefused("NEWOBJ makes only argparse.Namespace, without arguments")
        self.push(CLASSES[cls.key]())

    def build(self):
        state, target = self.pop(), self.top()
        if type(target) is _ScalarDtype:
            target.check_state(state)
            return
        if type(target) not in (OrderedDict, argparse.Namespace):
            raise PickleRefused(f"BUILD on a {_name(target)}")
        if type(state) is not dict or not all(type(key) is str for key in state):
            raise PickleRefused(f"BUILD on a {_name(target)} with a {_name(state)}; a dict of attributes expected")
        if type(target) is argparse.Namespace:
            vars(target).update(state)
        # An OrderedDict's state is torch's `_metadata` attribute (module versions), which is dropped.

    def persistent(self):
        pid = self.pop()
        if not (type(pid) is tuple and len(pid) == 5 and type(pid[0]) is str and pid[0] == "storage"
                and type(pid[1]) is _Global
                and pid[1].key in STORAGE_TYPES and type(pid[2]) is str and type(pid[3]) is str):
            raise PickleRefused("a persistent id must be ('storage', <torch storage type>, key, location, numel)")
        dtype, key, numel = STORAGE_TYPES[pid[1].key], pid[2], _index(pid[4], "a storage's numel")
        if key not in self.storages:
            self.storages[key] = (dtype, numel, _Storage(self.read_storage(dtype, key, numel)))
        if self.storages[key][:2] != (dtype, numel):
            raise PickleRefused(f"storage {reprlib.repr(key)} appears with two types or sizes")
        self.push(self.storages[key][2])

    def run(self):
        data, operations = self.data, OPERATIONS
        while self.position < len(data):
            code = data[self.position]
            self.position += 1
            if code == STOP:
                result = self.pop()
                if self.stack or self.marks or self.position != len(data):
                    raise PickleRefused("the pickle has data left over after STOP")
                return result
            operation = operations.get(code)
            if operation is None:
                op = pickletools.code2op.get(chr(code))
                raise PickleRefused(f"opcode {op.name if op else hex(code)} is not allowed in a checkpoint")
            operation(self)
        raise PickleRefused("the pickle is truncated")


def _string(size_format):
    def operation(load):
        n = load.unpack(size_format)
        chunk = load.take(n)
        load.account(n)
        load.push(load.text(chunk))
    return operation


def _bytes(size_format):
    def operation(load):
        n = load.unpack(size_format)
        chunk = load.take(n)
        load.account(n)
        load.push(bytes(chunk))
    return operation


def _proto(load):
    if not 2 <= load.byte() <= 5:
        raise PickleRefused("only pickle protocols 2 to 5 are read")


def _long1(load):
    n = load.byte()
    load.account(n)
    load.push(int.from_bytes(load.take(n), "little", signed=True))


def _tuple(n):
    def operation(load):
        items = [load.pop() for _ in range(n)][::-1]
        load.push(tuple(items))
    return operation


def _stack_global(load):
    name, module = load.pop(), load.pop()
    if type(module) is not str or type(name) is not str:
        raise PickleRefused("STACK_GLOBAL needs two strings")
    load.global_(module, name)


def _setitem(load):
    value, key = load.pop(), load.pop()
    load.set_items(load.top(), [key, value])


def _setitems(load):
    items = load.pop_mark()
    load.set_items(load.top(), items)


def _append(load):
    value = load.pop()
    load.append(load.top(), [value])


def _appends(load):
    items = load.pop_mark()
    load.append(load.top(), items)


def _mark(load):
    load.account(OBJECT_COST)
    load.marks.append(len(load.stack))


STOP = ord(".")
OPERATIONS = {
    ord(code): operation
    for code, operation in {
        "\x80": _proto,                                          # PROTO
        "\x95": lambda load: load.take(8),                       # FRAME: only groups opcodes for reading
        "}": lambda load: load.push({}),                         # EMPTY_DICT
        "]": lambda load: load.push([]),                         # EMPTY_LIST
        ")": lambda load: load.push(()),                         # EMPTY_TUPLE
        "(": _mark,                                              # MARK
        "t": lambda load: load.push(tuple(load.pop_mark())),     # TUPLE
        "\x85": _tuple(1), "\x86": _tuple(2), "\x87": _tuple(3),  # TUPLE1-3
        "J": lambda load: load.push(load.unpack("<i")),          # BININT
        "K": lambda load: load.push(load.byte()),                # BININT1
        "M": lambda load: load.push(load.unpack("<H")),          # BININT2
        "\x8a": _long1,                                          # LONG1
        "G": lambda load: load.push(load.unpack(">d")),          # BINFLOAT
        "X": _string("<I"), "\x8c": _string("<B"), "\x8d": _string("<Q"),  # BINUNICODE, SHORT_, 8
        "B": _bytes("<I"), "C": _bytes("<B"), "\x8e": _bytes("<Q"),        # BINBYTES, SHORT_, 8
        "N": lambda load: load.push(None),                       # NONE
        "\x88": lambda load: load.push(True),                    # NEWTRUE
        "\x89": lambda load: load.push(False),                   # NEWFALSE
        "q": lambda load: load.put(load.byte()),                 # BINPUT
        "r": lambda load: load.put(load.unpack("<I")),           # LONG_BINPUT
        "\x94": lambda load: load.put(len(load.memo)),           # MEMOIZE
        "h": lambda load: load.get(load.byte()),                 # BINGET
        "j": lambda load: load.get(load.unpack("<I")),           # LONG_BINGET
        "s": _setitem, "u": _setitems,                           # SETITEM, SETITEMS
        "a": _append, "e": _appends,                             # APPEND, APPENDS
        "c": lambda load: load.global_(load.line(), load.line()),  # GLOBAL
        "\x93": _stack_global,                                   # STACK_GLOBAL
        "R": _Load.reduce,                                       # REDUCE
        "\x81": _Load.new_object,                                # NEWOBJ
        "b": _Load.build,                                        # BUILD
        "Q": _Load.persistent,                                   # BINPERSID
    }.items()
}


def load(data, storage, charge):
    """The object pickled in `data` (the data.pkl record of a PyTorch zip checkpoint).

    Args:
        data: the pickle's bytes (any bytes-like object).
        storage: storage(dtype, key, numel) -> the 1-D array of `numel` elements of the record
            data/<key>; called once per key, when the pickle first names it.
        charge: charge(nbytes, what), called before the interpreter makes objects or tensors of about
            `nbytes`; it raises to stop a load that would take too much memory.

    Raises PickleRefused for a malformed pickle or one that asks for anything but data.
    """
    return _Load(data, storage, charge).run()
