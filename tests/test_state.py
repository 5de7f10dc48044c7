"""forgetless.save / forgetless.load: round trips for every regularizer, and every way a file can be bad."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save as st_save
from torch import nn

import forgetless
from forgetless import REGULARIZERS, StateFileError, state

from synthetic import lifecycle_steps

# name -> hyperparameters that differ from the defaults, so that a lost one shows
NON_DEFAULT = {
    "l2": {"strength": 3.5},
    "ewc": {"strength": 12.0, "estimator": "sampled", "fisher_samples": 30, "seed": 7},
    "online-ewc": {"strength": 5.0, "decay": 0.5, "estimator": "empirical", "fisher_samples": None, "seed": 3},
    "si": {"strength": 0.25, "damping": 0.01},
    "mas": {"strength": 2.0, "importance_samples": 25},
}


def _model():
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))


def _task(seed, n=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _train(model, reg, data, steps=3):
    lifecycle_steps(reg, model, *data, steps=steps)


def _trained(name, tasks=2, finish=True):
    torch.manual_seed(0)
    model, reg = _model(), REGULARIZERS[name](**NON_DEFAULT[name])
    for t in range(tasks):
        _train(model, reg, _task(t))
        if finish or t < tasks - 1:
            reg.consolidate(model, _task(t))
    return model, reg


def _assert_same(a, b):
    assert type(a) is type(b)
    assert a.hyperparameters() == b.hyperparameters()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def _craft(path, tensors, *, name="ewc", hyperparameters=None, **meta_overrides):
    """A file with a VALID digest but whatever content we want: tests the checks behind the digest."""
    hp = json.dumps(NON_DEFAULT["ewc"] if hyperparameters is None else hyperparameters) \
        if not isinstance(hyperparameters, str) else hyperparameters
    meta = {"format": state.FORMAT, "format_version": str(state.FORMAT_VERSION), "regularizer": name,
            "class": "X", "hyperparameters": hp, "order": json.dumps(list(tensors)),
            "sha256": state._digest(name, hp, tensors)}
    meta.update(meta_overrides)
    path.write_bytes(st_save(tensors, metadata=meta))
    return path


def _error(path, **kwargs) -> str:
    with pytest.raises(StateFileError) as info:
        forgetless.load(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    return message


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_round_trip_after_two_tasks_gives_the_same_penalty(tmp_path, name):
    model, reg = _trained(name)
    path = forgetless.save(reg, tmp_path / f"{name}.safetensors")
    again = forgetless.load(path)
    _assert_same(reg, again)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    assert float(again.penalty(model).detach()) == float(reg.penalty(model).detach()) > 0  # bit-identical


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_round_trip_before_any_task(tmp_path, name):
    reg = REGULARIZERS[name](**NON_DEFAULT[name])
    again = forgetless.load(forgetless.save(reg, tmp_path / "r.safetensors"))
    _assert_same(reg, again)
    assert float(again.penalty(_model())) == 0.0


def test_si_saved_mid_task_resumes_the_same_path(tmp_path):
    """SI's path integral of the unfinished task survives: finishing after a reload = finishing directly."""
    model, si = _trained("si", tasks=2, finish=False)
    again = forgetless.load(forgetless.save(si, tmp_path / "si.safetensors"))
    _assert_same(si, again)
    si.consolidate(model)
    again.consolidate(model)
    _assert_same(si, again)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_other_dtypes_round_trip_and_are_checksummed(tmp_path, dtype):
    model = _model().to(dtype)
    reg = forgetless.L2(strength=2.0)
    reg.consolidate(model)
    path = forgetless.save(reg, tmp_path / "l2.safetensors")
    again = forgetless.load(path)
    _assert_same(reg, again)
    assert again.anchor["0.weight"].dtype == dtype
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x80
    path.write_bytes(bytes(data))
    assert "sha256 mismatch" in _error(path)


def test_overwrites_atomically_and_leaves_no_temporary_files(tmp_path):
    _, reg = _trained("ewc", tasks=1)
    path = tmp_path / "ewc.safetensors"
    forgetless.save(forgetless.EWC(strength=1.0), path)
    forgetless.save(reg, path)
    _assert_same(reg, forgetless.load(path))
    assert os.listdir(tmp_path) == ["ewc.safetensors"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = forgetless.save(forgetless.L2(strength=2.0), tmp_path / "l2.safetensors")
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(state.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        forgetless.save(_trained("l2")[1], path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["l2.safetensors"]


def test_load_to_a_device(tmp_path):
    _, reg = _trained("mas")
    again = forgetless.load(forgetless.save(reg, tmp_path / "m.safetensors"), device="cpu")
    _assert_same(reg, again)


def test_the_file_is_plain_safetensors_with_readable_metadata(tmp_path):
    from safetensors import safe_open

    _, reg = _trained("online-ewc")
    path = forgetless.save(reg, tmp_path / "o.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "forgetless.regularizer" and meta["format_version"] == "1"
    assert meta["regularizer"] == "online-ewc" and meta["class"] == "OnlineEWC"
    assert json.loads(meta["hyperparameters"]) == reg.hyperparameters()
    assert keys == set(reg.state_dict())


def test_save_refuses_an_unregistered_class(tmp_path):
    class Mine(forgetless.L2):
        pass

    with pytest.raises(ValueError, match="not in the registry"):
        forgetless.save(Mine(), tmp_path / "m.safetensors")
    # ... and works with a registry that lists it
    registry = {"mine": Mine}
    path = forgetless.save(Mine(strength=4.0), tmp_path / "m.safetensors", registry=registry)
    assert type(forgetless.load(path, registry=registry)) is Mine
    assert "unknown regularizer 'mine'" in _error(path)


# --------------------------------------------------------------------------------------------------
# Bad files: one line naming the file and the problem, never anything executed
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def good(tmp_path):
    _, reg = _trained("ewc")
    return forgetless.save(reg, tmp_path / "ewc.safetensors")


@pytest.mark.parametrize("keep", [0, 5, 8, 40, -1])
def test_truncated_file(good, keep):
    data = good.read_bytes()
    good.write_bytes(data[:keep] if keep >= 0 else data[:-3])
    message = _error(good)
    assert "safetensors" in message or "truncated" in message


def test_a_bit_flip_in_the_tensor_data_is_caught(good):
    data = bytearray(good.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    for offset in (header, (header + len(data)) // 2, len(data) - 1):  # first, middle, last data byte
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        good.write_bytes(bytes(damaged))
        assert "sha256 mismatch" in _error(good)


def test_a_changed_hyperparameter_is_caught(good):
    data = good.read_bytes()
    damaged = data.replace(b'\\"strength\\": 12.0', b'\\"strength\\": 92.0')
    assert damaged != data
    good.write_bytes(damaged)
    assert "sha256 mismatch" in _error(good)


@pytest.mark.parametrize("order", ["[1, 2]", "{}", "[", '["tasks_seen", "tasks_seen"]', '["tasks_seen", "x"]', "[]"])
def test_a_damaged_key_order_is_caught(tmp_path, order):
    path = _craft(tmp_path / "o.safetensors", {"tasks_seen": torch.tensor(0), "constant": torch.zeros(())},
                  order=order)
    assert "sha256 mismatch" in _error(path)


def test_a_damaged_header_is_caught(good):
    data = bytearray(good.read_bytes())
    data[9] = ord("#")  # inside the JSON header
    good.write_bytes(bytes(data))
    assert "header" in _error(good)


@pytest.mark.parametrize("content", [b"", b"hello", b"\xff" * 64, b"PK\x03\x04" + bytes(100)])
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    _error(path)


def test_a_pickle_is_refused_and_never_executed(tmp_path):
    """A torch.save / pickle file with a payload: load reads bytes, it never unpickles."""
    path = tmp_path / "evil.safetensors"
    marker = tmp_path / "executed"
    path.write_bytes(pickle.dumps(_Payload(str(marker))))
    _error(path)
    assert not marker.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_safetensors_file_that_forgetless_did_not_write(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(st_save({"weight": torch.zeros(2)}))
    assert "no string metadata" in _error(path)
    path.write_bytes(st_save({"weight": torch.zeros(2)}, metadata={"format": "pt"}))
    assert "not a forgetless regularizer file" in _error(path)


def test_an_unknown_regularizer(tmp_path):
    path = _craft(tmp_path / "u.safetensors", {"tasks_seen": torch.tensor(0)}, name="gem")
    assert "unknown regularizer 'gem'" in _error(path)


def test_a_newer_format_version(tmp_path):
    path = _craft(tmp_path / "v.safetensors", {"tasks_seen": torch.tensor(0)}, format_version="2")
    assert "newer" in _error(path)


def test_missing_metadata_fields(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(st_save({"tasks_seen": torch.tensor(0)},
                             metadata={"format": state.FORMAT, "format_version": "1", "regularizer": "l2"}))
    assert "lacks" in _error(path)


@pytest.mark.parametrize("hp, expect", [
    ("{strength: 1", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"strength": -1.0}', "refuses the hyperparameters"),
    ('{"strength": 1.0, "temperature": 2}', "refuses the hyperparameters"),
])
def test_bad_hyperparameters(tmp_path, hp, expect):
    tensors = {"tasks_seen": torch.tensor(0), "constant": torch.zeros(())}
    assert expect in _error(_craft(tmp_path / "h.safetensors", tensors, hyperparameters=hp))


@pytest.mark.parametrize("change, expect", [
    ("drop tasks_seen", "lacks ['tasks_seen']"),
    ("drop constant", "lacks ['constant']"),
    ("add foo", "unknown entries ['foo.weight']"),
    ("drop an anchor", "name different parameters"),
    ("reshape an importance", "parameter '2.bias' has shape (4,) in 'importance' but (3,) in 'anchor'"),
    ("vector tasks_seen", "must be a scalar"),
    ("float tasks_seen", "integer >= 0"),
    ("negative tasks_seen", "integer >= 0"),
])
def test_inconsistent_state(tmp_path, change, expect):
    _, reg = _trained("ewc")
    tensors = {k: v.clone() for k, v in reg.state_dict().items()}
    if change.startswith("drop "):
        key = {"an anchor": "anchor.2.bias"}.get(change[5:], change[5:])
        del tensors[key]
    elif change == "add foo":
        tensors["foo.weight"] = torch.zeros(1)
    elif change == "reshape an importance":
        tensors["importance.2.bias"] = torch.zeros(4)
    elif change == "vector tasks_seen":
        tensors["tasks_seen"] = torch.tensor([2])
    elif change == "float tasks_seen":
        tensors["tasks_seen"] = torch.tensor(2.0)
    elif change == "negative tasks_seen":
        tensors["tasks_seen"] = torch.tensor(-1)
    assert expect in _error(_craft(tmp_path / "s.safetensors", tensors))


def test_import_forgetless_stays_light():
    code = ("import sys, forgetless; heavy = [m for m in ('matplotlib', 'lightning', 'pytorch_lightning') "
            "if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_load_to_a_device_this_machine_lacks_names_it_before_reading(tmp_path):
    """It was a bare AssertionError from torch."""
    path = forgetless.save(_trained("l2")[1], tmp_path / "l2.safetensors")
    with pytest.raises(ValueError, match=r"^device='cuda' is not available on this machine \(") as info:
        forgetless.load(path, device="cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="device='nonsense' is not available"):
        forgetless.load(tmp_path / "never-read.safetensors", device="nonsense")


def test_save_into_a_missing_folder_names_that_folder_not_a_temporary_file(tmp_path):
    reg = forgetless.L2()
    target = tmp_path / "missing" / "l2.safetensors"
    with pytest.raises(FileNotFoundError, match=f"^cannot save {target}: folder {target.parent} does not exist$"):
        forgetless.save(reg, target)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(FileNotFoundError, match=r"does not exist \(it is a file\)$"):
        forgetless.save(reg, tmp_path / "a-file" / "l2.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


def test_a_write_error_names_the_file_asked_for(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/some/.tmp-name")

    monkeypatch.setattr(state.os, "open", refuse)
    target = tmp_path / "l2.safetensors"
    with pytest.raises(PermissionError, match=f"cannot save {target}: Permission denied$"):
        forgetless.save(forgetless.L2(), target)
