"""One state check for both loading paths: ``load_state_dict`` (torch.save / torch.load) and ``forgetless.load``.

Issue 15 item 6: ``load_state_dict`` accepted a missing anchor (that parameter then unprotected), no
anchors at all, or ``tasks_seen=1.7``, which ``forgetless.load`` refused; neither refused NaN or
negative importances.
"""
import io
import json

import pytest
import torch
from safetensors.torch import save as st_save
from torch import nn

import forgetless
from forgetless import REGULARIZERS, StateFileError, state

from synthetic import lifecycle_steps


def _trained(name: str, tasks: int = 2):
    torch.manual_seed(0)
    model, reg = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)), REGULARIZERS[name]()
    for t in range(tasks):
        g = torch.Generator().manual_seed(t)
        x, y = torch.randn(32, 5, generator=g), torch.randint(0, 3, (32,), generator=g)
        lifecycle_steps(reg, model, x, y)
        reg.consolidate(model, [(x, y)])
    return reg


def _load_state_dict(name: str, tensors: dict) -> str:
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    buffer.seek(0)
    with pytest.raises(ValueError) as info:
        REGULARIZERS[name]().load_state_dict(torch.load(buffer, weights_only=True))
    return str(info.value)


def _load_file(name: str, tensors: dict, folder) -> str:
    """A file with a valid digest around the bad state: the check behind the digest is what answers."""
    hp = json.dumps(REGULARIZERS[name]().hyperparameters())
    meta = {"format": state.FORMAT, "format_version": str(state.FORMAT_VERSION), "regularizer": name,
            "hyperparameters": hp, "order": json.dumps(list(tensors)), "sha256": state._digest(name, hp, tensors)}
    path = folder / f"{name}.safetensors"
    path.write_bytes(st_save(tensors, metadata=meta))
    with pytest.raises(StateFileError) as info:
        forgetless.load(path)
    return str(info.value)


def _set(tensors: dict, key: str, value) -> dict:
    return {**tensors, key: value}


# (method, how the state is spoiled, what the message says)
CASES = [
    ("ewc", lambda s: {k: v for k, v in s.items() if k != "anchor.2.bias"},
     "groups 'anchor' and 'importance' name different parameters ('2.bias' is in 'importance' only)"),
    ("ewc", lambda s: {k: v for k, v in s.items() if not k.startswith("anchor.")}, "no 'anchor' entries"),
    ("l2", lambda s: {"tasks_seen": s["tasks_seen"]}, "has tasks_seen=2 but no 'anchor' entries"),
    ("ewc", lambda s: _set(s, "tasks_seen", torch.tensor(1.7)), "'tasks_seen' must be an integer >= 0, got 1.7"),
    ("ewc", lambda s: _set(s, "tasks_seen", torch.tensor(True)), "'tasks_seen' must be an integer >= 0"),
    ("ewc", lambda s: _set(s, "tasks_seen", torch.tensor(0)), "has 'anchor' entries but tasks_seen is 0"),
    ("ewc", lambda s: _set(s, "importance.0.weight", s["importance.0.weight"].clone().fill_(float("nan"))),
     "entry 'importance.0.weight' holds NaN or infinite values"),
    ("online-ewc", lambda s: _set(s, "anchor.0.bias", s["anchor.0.bias"] + float("inf")),
     "entry 'anchor.0.bias' holds NaN or infinite values"),
    ("ewc", lambda s: _set(s, "importance.0.weight", -s["importance.0.weight"] - 1),
     "entry 'importance.0.weight' has negative values (EWC's importance is >= 0)"),
    ("ewc", lambda s: _set(s, "constant", torch.tensor(-1.0)), "entry 'constant' has negative values"),
    ("online-ewc", lambda s: _set(s, "importance.2.bias", -s["importance.2.bias"] - 1), "has negative values"),
    ("mas", lambda s: _set(s, "importance.2.bias", -s["importance.2.bias"] - 1), "has negative values"),
    ("si", lambda s: _set(s, "importance.2.bias", s["importance.2.bias"] * float("nan")), "holds NaN"),
    ("mas", lambda s: _set(s, "anchor.0.weight", s["anchor.0.weight"].long()), "must be floating point, got torch.int64"),
    ("si", lambda s: _set(s, "importance.2.weight", torch.zeros(4, 3)),
     "parameter '2.weight' has shape (4, 3) in 'importance' but (3, 4) in 'anchor'"),
]


@pytest.mark.parametrize("name, spoil, message", CASES, ids=[f"{c[0]}:{c[2][:40]}" for c in CASES])
def test_both_loading_paths_refuse_the_same_bad_state_with_the_same_reason(name, spoil, message, tmp_path):
    tensors = spoil({k: v.clone() for k, v in _trained(name).state_dict().items()})
    by_torch, by_file = _load_state_dict(name, tensors), _load_file(name, tensors, tmp_path)
    assert message in by_torch and message in by_file, (by_torch, by_file)
    assert "\n" not in by_torch and "\n" not in by_file


def test_si_may_hold_negative_importances():
    """Ω is not clipped at 0 (van de Ven's convention, see si.py): a negative Ω is a valid SI state."""
    si = _trained("si")
    tensors = si.state_dict()
    tensors["importance.2.bias"] = -tensors["importance.2.bias"].abs() - 1
    fresh = REGULARIZERS["si"]()
    fresh.load_state_dict(tensors)
    assert float(fresh.importance["2.bias"].max()) < 0


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_every_real_state_passes_the_check(name):
    for tasks in (0, 1, 2):
        reg = _trained(name, tasks)
        assert type(reg).state_problem(reg.state_dict()) is None
