"""Crafted checkpoint files: each is refused with a CheckpointError naming the file, runs no code,
changes nothing for later loads, and takes less than 200 MB however large the sizes it declares.

Every file is built here from raw pickle opcodes and a hand-written zip, so that the declared sizes,
compression and checksums are exactly as stated. Loads that could crash the interpreter (NumPy reading
file bytes as a pointer, reads past the end of an array) run in a subprocess.
"""
import argparse
import contextlib
import functools
import random
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from collections import OrderedDict

import numpy as np
import pytest
import torch

from lsnet_ref.checkpoint import CheckpointError, load, load_checkpoint

PEAK_LIMIT = 200 << 20
BOMB_BYTES = 256 << 20
MIB = 1 << 20


# ----- pickle opcodes -----
def glob(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def text(value):
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def integer(value):
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def tup(*items):
    return b"(" + b"".join(items) + b"t"


def call(function, *args):
    return function + tup(*args) + b"R"


def dictionary(**items):
    return b"}(" + b"".join(text(k) + v for k, v in items.items()) + b"u"


def storage(numel, kind="FloatStorage", key="0"):
    return tup(text("storage"), glob("torch", kind), text(key), text("cpu"), integer(numel)) + b"Q"


def tensor(source, size, stride, offset=0):
    return call(glob("torch._utils", "_rebuild_tensor_v2"), source, integer(offset), tup(*map(integer, size)),
                tup(*map(integer, stride)), b"\x89", call(glob("collections", "OrderedDict")))


def program(body):
    return b"\x80\x02" + body + b"."


# ----- zip archives with exactly the declared sizes, methods and checksums given -----
def member(name, data, method=0, declared=None, crc=None):
    return name, data, method, len(data) if declared is None else declared, zlib.crc32(data) if crc is None else crc


def write_zip(path, members):
    out, central = bytearray(), bytearray()
    for name, payload, method, size, crc in members:
        encoded, offset = name.encode(), len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(payload), size, len(encoded), 0)
        out += encoded + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(payload), size,
                               len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return path


def torch_file(path, pickle_bytes, *storages):
    records = [member("archive/data.pkl", pickle_bytes), member("archive/byteorder", b"little")]
    return write_zip(path, records + list(storages))


def deflate(data):
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


@functools.lru_cache(maxsize=None)
def deflated_zeros(prefix, nbytes):
    """A raw deflate stream of `prefix` then `nbytes` zero bytes (whole MiB), and its CRC-32: blocks
    cut with a full flush are independent, so one compressed MiB repeats."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc, zeros = zlib.crc32(prefix), bytes(MIB)
    for _ in range(nbytes // MIB):
        crc = zlib.crc32(zeros, crc)
    return head + block * (nbytes // MIB) + compressor.flush(), crc


def npy_header(descr, shape):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def zip_bomb(name, prefix=b"", declared=None):
    payload, crc = deflated_zeros(prefix, BOMB_BYTES)
    return member(name, payload, 8, len(prefix) + BOMB_BYTES if declared is None else declared, crc)


# ----- the crafted files -----
def object_field_scalar(path):
    # A structured dtype whose BUILD state gives its field the object dtype without the object flags,
    # then a scalar of it from 8 file bytes, which NumPy reads as a pointer.
    dtype = call(glob("numpy", "dtype"), text("V8"), b"\x89", b"\x88")
    field = tup(call(glob("numpy", "dtype"), text("O"), b"\x89", b"\x88"), integer(0))
    state = tup(integer(3), text("|"), b"N", tup(text("a")), b"}" + text("a") + field + b"s", integer(8), integer(1),
                integer(0))
    scalar = call(glob("numpy.core.multiarray", "scalar"), dtype + state + b"b", b"C\x08" + b"\x41" * 8)
    return torch_file(path, program(dictionary(x=scalar)))


def tensor_as_storage(path):
    # A (2, n) tensor passed as the storage of a second one: row slicing moves `offset` rows, not elements.
    n = 100_000
    rows = tensor(storage(2 * n), (2, n), (n, 1))
    past_the_end = tensor(rows, (n - 1,), (1,), offset=n)
    payload = bytes(8 * n)
    return torch_file(path, program(dictionary(x=past_the_end)), member("archive/data/0", deflate(payload), 8,
                                                                        len(payload), zlib.crc32(payload)))


def nested_tuple_key(path):
    # A dict key nested 100000 tuples deep (hashing it recurses in C): dict keys are plain values.
    key = b"N" + b"\x85" * 100_000
    return torch_file(path, program(b"}" + key + b"Ns"))


def build_on_storage_type(path):
    # BUILD on torch.FloatStorage rewrote the dtype that every later load used for float storages.
    state = dictionary(dtype=call(glob("numpy", "dtype"), text("i4"), b"\x89", b"\x88"))
    return torch_file(path, program(glob("torch", "FloatStorage") + state + b"b"))


def build_on_namespace_class(path):
    # BUILD with slot state sets attributes on argparse.Namespace itself.
    return torch_file(path, program(glob("argparse", "Namespace") + b"N" + dictionary(lsnet_marker=integer(1))
                                    + b"\x86b"))


def build_on_ordered_dict_class(path):
    return torch_file(path, program(glob("collections", "OrderedDict") + b"N" + dictionary(x=integer(1)) + b"\x86b"))


def stride_zero(numel):
    def build(path):
        return torch_file(path, program(dictionary(x=tensor(storage(1, "DoubleStorage"), (numel,), (0,)))),
                          member("archive/data/0", bytes(8)))
    return build


def overlapping_elements(path):
    # Four elements counted from three stored ones: size (2, 2), stride (1, 1).
    return torch_file(path, program(dictionary(x=tensor(storage(3), (2, 2), (1, 1)))),
                      member("archive/data/0", bytes(12)))


def overflowing_size(path):
    return torch_file(path, program(dictionary(x=tensor(storage(1), (2**62, 2**62), (1, 1)))),
                      member("archive/data/0", bytes(4)))


def negative_offset(path):
    return torch_file(path, program(dictionary(x=tensor(storage(4), (2,), (1,), offset=-2))),
                      member("archive/data/0", bytes(16)))


def missing_storage_record(path):
    return torch_file(path, program(dictionary(x=tensor(storage(1), (1,), (1,)))))


def storage_bigger_than_its_record(path):
    # The storage record decompresses to 256 MiB; the pickle says it holds one float.
    return torch_file(path, program(dictionary(x=tensor(storage(1), (1,), (1,)))), zip_bomb("archive/data/0"))


def storage_zip_bomb(path):
    # A consistent 256 MiB storage compressed into a few hundred kB.
    numel = BOMB_BYTES // 4
    return torch_file(path, program(dictionary(x=tensor(storage(numel), (numel,), (1,)))), zip_bomb("archive/data/0"))


def record_lying_about_its_size(path):
    # The zip directory says 4 bytes; the deflate stream holds 256 MiB.
    return torch_file(path, program(dictionary(x=tensor(storage(1), (1,), (1,)))),
                      zip_bomb("archive/data/0", declared=4))


def pickle_object_bomb(path):
    # 4 MB of EMPTY_DICT opcodes, deflated to a few kB: four million dicts.
    data = program(b"}" * 4_000_000)
    return write_zip(path, [member("archive/data.pkl", deflate(data), 8, len(data), zlib.crc32(data))])


def npz_huge_shape(path):
    return write_zip(path, [member("w.npy", npy_header("<f8", (10**12,)))])


def npz_declared_256_mib(path):
    return write_zip(path, [member("w.npy", npy_header("<f8", (BOMB_BYTES // 8,)) + bytes(8))])


def npz_zip_bomb(path):
    return write_zip(path, [zip_bomb("w.npy", prefix=npy_header("<f8", (BOMB_BYTES // 8,)))])


def npz_object_dtype(path):
    return write_zip(path, [member("w.npy", npy_header("|O", (1,)) + b"\x80\x02N.")])


def npz_bzip2(path):
    data = npy_header("<f4", (1,)) + bytes(4)
    return write_zip(path, [member("w.npy", data, method=12)])


CRASHES = {"object_field_scalar": object_field_scalar, "tensor_as_storage": tensor_as_storage}
HOSTILE = {
    "nested_tuple_key.pth": nested_tuple_key,
    "build_on_storage_type.pth": build_on_storage_type,
    "build_on_namespace_class.pth": build_on_namespace_class,
    "build_on_ordered_dict_class.pth": build_on_ordered_dict_class,
    "stride_zero_256_mib.pth": stride_zero(BOMB_BYTES // 8),
    "stride_zero_size_1e12.pth": stride_zero(10**12),
    "overlapping_elements.pth": overlapping_elements,
    "overflowing_size.pth": overflowing_size,
    "negative_offset.pth": negative_offset,
    "missing_storage_record.pth": missing_storage_record,
    "storage_bigger_than_its_record.pth": storage_bigger_than_its_record,
    "storage_zip_bomb.pth": storage_zip_bomb,
    "record_lying_about_its_size.pth": record_lying_about_its_size,
    "pickle_object_bomb.pth": pickle_object_bomb,
    "npz_huge_shape.npz": npz_huge_shape,
    "npz_declared_256_mib.npz": npz_declared_256_mib,
    "npz_zip_bomb.npz": npz_zip_bomb,
    "npz_object_dtype.npz": npz_object_dtype,
    "npz_bzip2.npz": npz_bzip2,
}


# ----- a valid checkpoint to load before and after each crafted one -----
@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    model = OrderedDict(w=base, t=base.t(), b=torch.tensor([True, False]), n=torch.tensor(7))
    path = tmp_path_factory.mktemp("valid") / "valid.pth"
    torch.save({"model": model, "args": argparse.Namespace(lr=1e-3, model="lsnet_t"), "max_accuracy": np.float64(74.5),
                "epoch": 3}, path)
    return path, load(path)


def assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, argparse.Namespace):
        assert_same(vars(a), vars(b))
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def load_with_peak(path):
    """The CheckpointError that loading `path` raises, and the peak of memory allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as caught:
            load(path)
        return caught.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_crafted_file_is_refused_within_memory_and_changes_nothing(tmp_path, valid, name):
    path = HOSTILE[name](tmp_path / name)
    assert path.stat().st_size < 2 * MIB
    error, peak = load_with_peak(path)
    assert str(path) in str(error)
    assert peak < PEAK_LIMIT, f"{name}: {peak / MIB:.0f} MiB"
    valid_path, before = valid
    assert_same(load(valid_path), before)
    assert not hasattr(argparse.Namespace, "lsnet_marker") and not hasattr(OrderedDict, "x")


@pytest.mark.parametrize("name", sorted(CRASHES))
def test_crafted_file_that_could_crash_the_interpreter_is_refused(tmp_path, name):
    path = CRASHES[name](tmp_path / f"{name}.pth")
    script = ("import sys\nfrom lsnet_ref.checkpoint import CheckpointError, load\n"
              "try:\n    print('loaded:', repr(load(sys.argv[1])))\n"
              "except CheckpointError as error:\n    print('refused:', error)\n")
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"refused: {path}"), result.stdout[-2000:]


# ----- pickles that would run code -----
def marker_command(marker):
    return text(f"touch {marker}")


CODE_RUNNERS = {
    "reduce": lambda m: glob("posix", "system") + tup(marker_command(m)) + b"R",
    "stack_global": lambda m: b"\x8c\x05posix\x8c\x06system\x93" + tup(marker_command(m)) + b"R",
    "inst": lambda m: b"(" + marker_command(m) + b"iposix\nsystem\n",
    "obj": lambda m: b"(" + glob("posix", "system") + marker_command(m) + b"o",
    "newobj_ex": lambda m: glob("builtins", "eval") + tup(text(f"open('{m}', 'w')")) + b"}\x92",
    "ext1": lambda m: b"\x82\x01",
    "global_in_build_state": lambda m: call(glob("collections", "OrderedDict")) + b"N"
    + dictionary(__class__=glob("posix", "system")) + b"\x86b",
}


@pytest.mark.parametrize("how", sorted(CODE_RUNNERS))
def test_a_pickle_that_would_run_code_runs_nothing(tmp_path, how):
    marker = tmp_path / "executed"
    path = torch_file(tmp_path / "evil.pth", program(CODE_RUNNERS[how](marker)))
    with pytest.raises(CheckpointError, match="evil.pth"):
        load(path)
    assert not marker.exists()


def test_build_applies_only_to_objects_of_this_load(tmp_path, valid):
    # Each load makes its own Namespace: changing one loaded object leaves the next load alone.
    valid_path, before = valid
    first = load(valid_path)
    first["args"].lr = 99.0
    second = load(valid_path)
    assert second["args"] is not first["args"] and second["args"].lr == before["args"].lr
    refused = {
        "dict": dictionary(x=integer(1)) + dictionary(y=integer(2)) + b"b",
        "list": b"]" + dictionary(y=integer(2)) + b"b",
        "namespace_slot_state": glob("argparse", "Namespace") + b")\x81" + tup(b"N", dictionary(y=integer(2))) + b"b",
        "tensor": tensor(storage(1), (1,), (1,)) + dictionary(y=integer(2)) + b"b",
    }
    for name, body in refused.items():
        path = torch_file(tmp_path / f"{name}.pth", program(body), member("archive/data/0", bytes(4)))
        with pytest.raises(CheckpointError, match="BUILD"):
            load(path)


def test_numpy_scalars_only_with_the_exact_state_of_a_plain_number_type(tmp_path):
    def scalar(name, state, data):
        dtype = call(glob("numpy", "dtype"), text(name), b"\x89", b"\x88") + state + b"b"
        return program(dictionary(x=call(glob("numpy._core.multiarray", "scalar"), dtype, data)))

    good = tup(integer(3), text("<"), b"N", b"N", b"N", integer(-1), integer(-1), integer(0))
    loaded = load(torch_file(tmp_path / "good.pth", scalar("f8", good, b"C\x08" + struct.pack("<d", 74.5))))
    assert loaded["x"] == 74.5 and type(loaded["x"]) is np.float64
    bad = {
        "big_endian": ("f8", tup(integer(3), text(">"), b"N", b"N", b"N", integer(-1), integer(-1), integer(0)), 8),
        "object_flags": ("f8", tup(integer(3), text("<"), b"N", b"N", b"N", integer(-1), integer(-1), integer(63)), 8),
        "bool_for_int": ("f8", tup(integer(3), text("<"), b"N", b"N", b"N", integer(-1), integer(-1), b"\x89"), 8),
        "object_dtype": ("O", good, 8),
        "structured": ("V8", good, 8),
        "short_data": ("f8", good, 4),
    }
    for name, (code, state, size) in bad.items():
        with pytest.raises(CheckpointError):
            load(torch_file(tmp_path / f"{name}.pth", scalar(code, state, b"C" + bytes([size]) + bytes(size))))


def test_deep_nesting_is_data_not_a_recursion_error(tmp_path):
    depth = 50_000
    path = torch_file(tmp_path / "deep.pth", program(b"]" * depth + b"a" * (depth - 1)))
    nested = load(path)
    assert isinstance(nested, list) and isinstance(nested[0], list)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(path)


def fuzzed_copies(data, count, seed):
    rng = random.Random(seed)
    for _ in range(count):
        copy = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(copy))
            action = rng.choice(["flip", "cut", "insert"])
            if action == "flip":
                copy[position] = rng.randrange(256)
            elif action == "cut":
                del copy[position : position + rng.randint(1, 8)]
            else:
                copy[position:position] = bytes([rng.randrange(256)])
        yield bytes(copy)


def test_mutated_pickles_and_archives_only_raise_checkpoint_errors(tmp_path, valid):
    valid_path, _ = valid
    with zipfile.ZipFile(valid_path) as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    pickle_name = next(name for name in records if name.endswith("data.pkl"))
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, w=np.arange(12, dtype=np.float32).reshape(3, 4), b=np.arange(5))
    path = tmp_path / "fuzzed.pth"
    for data in fuzzed_copies(records[pickle_name], 400, seed=0):
        write_zip(path, [member(name, data if name == pickle_name else content) for name, content in records.items()])
        with contextlib.suppress(CheckpointError):
            load(path)
    for source, copies in ((valid_path, 300), (compressed, 300)):
        path = tmp_path / f"fuzzed{source.suffix}"
        for data in fuzzed_copies(source.read_bytes(), copies, seed=1):
            path.write_bytes(data)
            with contextlib.suppress(CheckpointError):
                load(path)


def test_safetensors_with_offsets_outside_the_file_is_refused(tmp_path):
    pytest.importorskip("safetensors")
    header = b'{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}'
    path = tmp_path / "lying.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    error, peak = load_with_peak(path)
    assert "lying.safetensors" in str(error) and peak < PEAK_LIMIT
    path.write_bytes(struct.pack("<Q", 10**12) + header)
    with pytest.raises(CheckpointError, match="lying.safetensors"):
        load(path)
