"""prose-code: the texts, their fingerprints, the byte windows and the fixed / seeded splits."""
from __future__ import annotations

import hashlib

import pytest
import torch

from forgetless.benchmarks.prose_code import N_BYTES, TEST_EVERY, byte_windows, prose_code, prose_code_benchmark
from forgetless.data import DataError
from forgetless.data.text import CODE_FILES, TextCorpus, code_text, load_prose_code, prose_text


def toy(n_prose: int = 5000, n_code: int = 4000) -> tuple[TextCorpus, TextCorpus]:
    g = torch.Generator().manual_seed(1)
    prose = bytes(torch.randint(97, 123, (n_prose,), generator=g).tolist())
    code = bytes(torch.randint(32, 127, (n_code,), generator=g).tolist())
    return TextCorpus("prose", prose, "toy"), TextCorpus("code", code, "toy")


def rows(split) -> set[bytes]:
    return {bytes(r.tolist()) for r in split.x.to(torch.uint8)}


def test_windows_rebuild_the_text_and_targets_are_the_next_byte():
    text = bytes(range(256)) * 3 + b"tail"
    x, y = byte_windows(text, 10)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == ((len(text) - 1) // 10, 10)
    assert bytes(x.flatten().tolist()) == text[: x.numel()]          # consecutive, non-overlapping
    assert bytes(y.flatten().tolist()) == text[1 : x.numel() + 1]    # each target: the byte after its input
    with pytest.raises(ValueError, match="seq_len must be >= 1"):
        byte_windows(text, 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_splits_partition_the_windows_in_whole_blocks(seed):
    data = toy()
    bench = prose_code(data, scenario="domain", seed=seed, seq_len=8, block_windows=4)
    for corpus, task in zip(data, bench.tasks):
        x, y = byte_windows(corpus.text, 8)
        block_of = {bytes(r.tolist()): i // 4 for i, r in enumerate(x)}  # random text: rows are unique
        assert len(block_of) == len(x)
        parts = {name: rows(getattr(task, name)) for name in ("train", "valid", "test")}
        assert sum(len(p) for p in parts.values()) == len(x) and set().union(*parts.values()) == set(block_of)
        blocks = {name: {block_of[r] for r in p} for name, p in parts.items()}
        assert not (blocks["train"] & blocks["valid"] or blocks["train"] & blocks["test"] or blocks["valid"] & blocks["test"])
        assert blocks["test"] == {b for b in block_of.values() if b % TEST_EVERY == TEST_EVERY - 1}
        n_rest = len(set(block_of.values())) - len(blocks["test"])
        assert len(blocks["valid"]) == round(0.1 * n_rest)
        for split in (task.train, task.valid, task.test):   # y is still x shifted by one byte
            assert torch.equal(split.x[:, 1:], split.y[:, :-1])
        assert task.outputs == task.classes == tuple(range(N_BYTES))


def test_test_split_is_fixed_validation_is_seeded():
    data = toy()
    a, b, a2 = (prose_code(data, scenario="domain", seed=s, seq_len=8, block_windows=4) for s in (0, 1, 0))
    for ta, tb, ta2 in zip(a.tasks, b.tasks, a2.tasks):
        assert torch.equal(ta.test.x, tb.test.x)
        assert not torch.equal(ta.valid.x, tb.valid.x)
        assert torch.equal(ta.valid.x, ta2.valid.x) and torch.equal(ta.train.x, ta2.train.x)


def test_info_records_what_ran():
    data = toy()
    bench = prose_code(data, scenario="domain", seq_len=8, block_windows=4)
    assert bench.name == "prose-code" and bench.scenario == "domain" and bench.n_outputs == 256
    assert [t.name for t in bench.tasks] == ["prose", "code"]
    assert bench.info["seq_len"] == 8 and bench.info["block_windows"] == 4
    for corpus in data:
        facts = bench.info["domains"][corpus.name]
        assert facts == {"bytes": len(corpus.text), "sha256": hashlib.sha256(corpus.text).hexdigest(), "source": "toy"}


def test_refusals_are_one_clear_line():
    data = toy()
    with pytest.raises(ValueError, match="only the domain scenario, not 'task'"):
        prose_code(data, scenario="task")
    with pytest.raises(ValueError, match="unknown scenario"):
        prose_code(data, scenario="nope")
    with pytest.raises(ValueError, match="gives 3 blocks .* need at least 10"):
        prose_code(toy(100, 5000), scenario="domain", seq_len=8, block_windows=4)
    with pytest.raises(ValueError, match="valid_fraction"):
        prose_code(data, scenario="domain", valid_fraction=1.0)


def test_this_pythons_texts():
    import pydoc_data.topics

    prose, code = load_prose_code()
    topics = pydoc_data.topics.topics
    assert prose.text.decode("utf-8") == "".join(topics[k].rstrip("\n") + "\n\n" for k in sorted(topics))
    assert prose.sha256 == hashlib.sha256(prose.text).hexdigest()
    starts = [code.text.find(f"# file: {name}\n".encode()) for name in CODE_FILES]
    assert starts[0] == 0 and starts == sorted(starts)  # every file, in the listed order
    assert 300_000 < len(prose.text) < 700_000 and 300_000 < len(code.text) < 700_000


def test_missing_texts_raise_a_data_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"cannot read standard-library file .*argparse\.py"):
        code_text(tmp_path)
    import importlib

    real = importlib.import_module

    def no_pydoc(name, *args):
        if name == "pydoc_data.topics":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_pydoc)
    with pytest.raises(DataError, match="needs pydoc_data.topics"):
        prose_text()


def test_the_real_benchmark_through_the_registry_signature():
    bench = prose_code_benchmark(scenario="domain", seed=0)
    prose, code = bench.tasks
    for task in bench.tasks:
        for split in (task.train, task.valid, task.test):
            assert split.x.dtype == torch.int64 and split.x.shape[1] == 64 and split.y.shape == split.x.shape
        n = len(task.train) + len(task.valid) + len(task.test)
        assert 0.08 < len(task.test) / n < 0.12 and 0.08 < len(task.valid) / n < 0.12
    assert bench.info["domains"]["prose"]["sha256"] == prose_text().sha256


def test_training_windows_are_in_a_seeded_random_order():
    data = toy(20000, 4000)
    a, b = (prose_code(data, scenario="domain", seed=s, seq_len=8, block_windows=4) for s in (0, 0))
    assert torch.equal(a.tasks[0].train.x, b.tasks[0].train.x)
    x, _ = byte_windows(data[0].text, 8)
    position = {bytes(r.tolist()): i for i, r in enumerate(x)}
    first = [position[bytes(r.tolist())] for r in a.tasks[0].train.x[:100]]
    assert first != sorted(first) and max(first) > len(x) // 2   # the first windows come from all over the text
    test = [position[bytes(r.tolist())] for r in a.tasks[0].test.x]
    assert test == sorted(test)
