"""Checkpoint files: PyTorch's zip format both ways, .npz, .safetensors, atomic writes, and the refusals."""
import argparse
import errno
import os
import pickle
import stat
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

import lsnet_ref.checkpoint as checkpoint
from lsnet_ref.checkpoint import CheckpointError, CheckpointWriteError, load_checkpoint, save_checkpoint


def sample_state_dict():
    rng = np.random.default_rng(0)
    return OrderedDict(
        [
            ("blocks1.0.c.weight", torch.from_numpy(rng.standard_normal((8, 4, 3, 3)).astype(np.float32))),
            ("blocks1.0.bn.num_batches_tracked", torch.tensor(7)),
            ("head.l.weight", torch.from_numpy(rng.standard_normal((5, 8)))),
            ("blocks4.1.mixer.m.attention_bias_idxs", torch.arange(16).reshape(4, 4)),
        ]
    )


def assert_same_state(ours, theirs):
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        expected = tensor.numpy()
        assert ours[name].dtype == expected.dtype and ours[name].shape == expected.shape, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)


@pytest.mark.parametrize("layout", ["bare", "model", "model_ema", "module_prefix"])
def test_torch_saved_checkpoints_load_without_torch_semantics_lost(tmp_path, layout):
    state = sample_state_dict()
    stored = {
        "bare": state,
        "model": {"model": state, "epoch": 3, "args": argparse.Namespace(lr=4e-3, model="lsnet_t")},
        "model_ema": {"model_ema": state, "max_accuracy": np.float64(74.9)},
        "module_prefix": OrderedDict(("module." + k, v) for k, v in state.items()),
    }[layout]
    path = tmp_path / "authors.pth"
    torch.save(stored, path)
    assert_same_state(load_checkpoint(path), state)


def test_views_into_shared_storage_load_as_their_own_values(tmp_path):
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    state = {"transposed": base.t(), "sliced": base[1:3, ::2], "scalar": base[2, 3]}
    torch.save(state, tmp_path / "views.pth")
    loaded = load_checkpoint(tmp_path / "views.pth")
    for name, tensor in state.items():
        np.testing.assert_array_equal(loaded[name], tensor.numpy(), err_msg=name)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_training_checkpoints_of_every_pickle_protocol_load(tmp_path, protocol):
    # The authors' files: a Namespace of arguments, NumPy scalars, optimizer state, a parameter.
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))])
    stored = {
        "model": sample_state_dict(), "optimizer": optimizer.state_dict(), "epoch": 7,
        "args": argparse.Namespace(lr=4e-3, model="lsnet_t", input_size=(3, 224), resume=None),
        "max_accuracy": np.float64(74.9), "n": np.int64(-3), "ok": np.bool_(True), "half": np.float16(0.5),
        "big": 2**100, "raw": b"\x00\xff", "text": "\u00e9\U0001f600", "p": torch.nn.Parameter(torch.ones(2)),
    }
    path = tmp_path / "train.pth"
    torch.save(stored, path, pickle_protocol=protocol)
    loaded = checkpoint.load(path)
    assert vars(loaded["args"]) == vars(stored["args"]) and type(loaded["args"]) is argparse.Namespace
    for name in ("max_accuracy", "n", "ok", "half"):
        assert type(loaded[name]) is type(stored[name]) and loaded[name] == stored[name], name
    assert loaded["big"] == 2**100 and loaded["raw"] == b"\x00\xff" and loaded["text"] == stored["text"]
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999) and loaded["epoch"] == 7
    np.testing.assert_array_equal(loaded["p"], np.ones(2, np.float32))
    assert_same_state(loaded["model"], stored["model"])


def test_our_checkpoint_loads_in_torch_weights_only(tmp_path):
    state = {k: v.numpy() for k, v in sample_state_dict().items()}
    path = tmp_path / "ours.pth"
    save_checkpoint(state, path)
    loaded = torch.load(path, weights_only=True)
    assert_same_state({k: v for k, v in state.items()}, loaded)
    assert_same_state(load_checkpoint(path), loaded)


def test_nested_objects_round_trip_through_torch(tmp_path):
    obj = {
        "model": {"w": np.ones((2, 3), np.float32)},
        "epoch": 4,
        "rng": [2**100 + 3, -(2**40), 0.25, None, True, "pcg64"],
        "position": (3, 17),
    }
    path = tmp_path / "full.pth"
    checkpoint.save(obj, path)
    for loaded in (checkpoint.load(path), torch.load(path, weights_only=True)):
        assert loaded["epoch"] == 4 and loaded["rng"] == obj["rng"] and tuple(loaded["position"]) == (3, 17)
        np.testing.assert_array_equal(np.asarray(loaded["model"]["w"]), obj["model"]["w"])


def test_npz_round_trip(tmp_path):
    state = {k: v.numpy() for k, v in sample_state_dict().items()}
    save_checkpoint(state, tmp_path / "weights.npz")
    loaded = load_checkpoint(tmp_path / "weights.npz")
    assert_same_state(loaded, {k: torch.from_numpy(v) for k, v in state.items()})


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"w": _RunsCode(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="refuses the global (posix|os).system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(sample_state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth: truncated or corrupt"):
        load_checkpoint(path)


def test_corrupt_storage_bytes_are_a_clear_error(tmp_path):
    path = tmp_path / "flipped.pth"
    torch.save(sample_state_dict(), path)
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data/0"))
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_length + extra_length + 5] ^= 0xFF  # a byte of the storage
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="flipped.pth: truncated or corrupt"):
        load_checkpoint(path)


def test_missing_file_and_non_checkpoint_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth: truncated or corrupt"):
        load_checkpoint(tmp_path / "notes.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_checkpoint(tmp_path / "list.pth")


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    good = {"w": np.ones(3, np.float32)}
    save_checkpoint(good, path)
    before = path.read_bytes()

    def broken_writestr(self, name, data, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", broken_writestr)
    with pytest.raises(CheckpointWriteError, match="weights.pth: cannot write the checkpoint .No space left") as caught:
        save_checkpoint({"w": np.zeros(3, np.float32)}, path)
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pth"]


def test_a_failed_rename_removes_the_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "weights.npz"
    save_checkpoint({"w": np.ones(3, np.float32)}, path)
    before = path.read_bytes()

    def read_only(source, destination):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(CheckpointWriteError, match="weights.npz: .*Read-only file system"):
        save_checkpoint({"w": np.zeros(3, np.float32)}, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["weights.npz"]


def test_saving_into_a_missing_folder_or_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    for path in (tmp_path / "file" / "weights.pth", tmp_path / "absent" / "weights.pth"):
        with pytest.raises(CheckpointWriteError, match=f"{path}: cannot write the checkpoint"):
            save_checkpoint({"w": np.ones(3, np.float32)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_checkpoints_get_the_permissions_the_umask_gives_new_files(tmp_path, umask):
    previous = os.umask(umask)
    try:
        for name in ("weights.pth", "weights.npz"):
            save_checkpoint({"w": np.ones(3, np.float32)}, tmp_path / name)
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    finally:
        os.umask(previous)


def test_remove_stale_temporaries_deletes_only_what_an_interrupted_save_left(tmp_path, monkeypatch):
    save_checkpoint({"w": np.ones(3, np.float32)}, tmp_path / "checkpoint.pth")
    monkeypatch.setattr(os, "replace", lambda source, destination: None)  # the process dies before the rename
    save_checkpoint({"w": np.zeros(3, np.float32)}, tmp_path / "checkpoint.pth")
    monkeypatch.undo()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert len(left) == 1
    (tmp_path / ".tmp-abc_1234best.pth").write_bytes(b"older saver's name")
    (tmp_path / ".tmp-short").write_bytes(b"not ours")
    (tmp_path / "notes.txt").write_text("kept")
    (tmp_path / ".tmp-12345678folder").mkdir()
    removed = checkpoint.remove_stale_temporaries(tmp_path)
    assert removed == sorted(str(tmp_path / name) for name in left + [".tmp-abc_1234best.pth"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-12345678folder", ".tmp-short", "checkpoint.pth",
                                                          "notes.txt"]
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "checkpoint.pth")["w"], np.ones(3, np.float32))
    assert checkpoint.remove_stale_temporaries(tmp_path / "absent") == []


def test_unsupported_values_are_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match="cannot store a set"):
        checkpoint.save({"s": {1, 2}}, tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


def test_pickle_stream_is_protocol_2_with_tensor_rebuilds(tmp_path):
    path = tmp_path / "ours.pth"
    save_checkpoint({"w": np.zeros((2, 2), np.float32)}, path)
    with zipfile.ZipFile(path) as archive:
        data = archive.read("ours/data.pkl")
    assert data[:2] == b"\x80\x02" and b"_rebuild_tensor_v2" in data and b"FloatStorage" in data
    assert data[-1:] == b"."


def test_safetensors_round_trip_and_interchange_with_the_safetensors_package(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    state = {k: v.numpy() for k, v in sample_state_dict().items()}
    state["transposed"] = state["head.l.weight"].T
    path = tmp_path / "weights.safetensors"
    save_checkpoint(state, path)
    for loaded in (load_checkpoint(path), checkpoint.load(path)):
        assert sorted(loaded) == sorted(state)
        for name, array in state.items():
            assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
            np.testing.assert_array_equal(loaded[name], array, err_msg=name)
    theirs = safetensors_torch.load_file(path)
    assert_same_state(dict(sorted(load_checkpoint(path).items())), dict(sorted(theirs.items())))
    safetensors_torch.save_file(dict(sample_state_dict()), tmp_path / "hf.safetensors")
    assert_same_state(dict(sorted(load_checkpoint(tmp_path / "hf.safetensors").items())),
                      dict(sorted(sample_state_dict().items())))
    with pytest.raises(TypeError, match="flat"):
        checkpoint.save({"model": state}, tmp_path / "nested.safetensors")


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "cut.safetensors"
    save_checkpoint({"w": np.ones(3, np.float32)}, path)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match="cut.safetensors: corrupt"):
        load_checkpoint(path)
    header = b'{"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}'
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    with pytest.raises(CheckpointError, match="cut.safetensors: corrupt or unreadable"):
        load_checkpoint(path)


def test_safetensors_without_the_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    (tmp_path / "w.safetensors").write_bytes(b"")
    for call in (lambda: load_checkpoint(tmp_path / "w.safetensors"),
                 lambda: save_checkpoint({"w": np.ones(1)}, tmp_path / "x.safetensors")):
        with pytest.raises(CheckpointError, match=r"safetensors package: pip install 'lsnet-ref\[safetensors\]'"):
            call()
    assert not (tmp_path / "x.safetensors").exists()
