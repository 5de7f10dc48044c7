"""Benchmarks × scenarios on small synthetic data: label mapping, outputs, transforms, permutations,
validation splits and the registry's errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from forgetless.benchmarks import (
    BENCHMARKS,
    SCENARIOS,
    SelectOutputs,
    eval_output_transform,
    make_benchmark,
    permuted_mnist,
    pixel_permutations,
    required_dataset,
    split_fashion,
    split_mnist,
    supported_scenarios,
    task_output_transform,
)
from forgetless.benchmarks.base import to_inputs
from forgetless.data import ImageData


def image_data(n_train: int = 300, n_test: int = 100, seed: int = 0) -> ImageData:
    """Random images (distinct with overwhelming probability), labels cycling through 0..9."""
    rng = np.random.default_rng(seed)
    images = lambda n: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)  # noqa: E731
    labels = lambda n: rng.permutation(np.arange(n) % 10).astype(np.int64)  # noqa: E731
    return ImageData(images(n_train), labels(n_train), images(n_test), labels(n_test), source="synthetic")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These tensors are tiny: on a loaded 2-core machine, intra-op threads only wait on each other
    (building a 300-image benchmark took 0.3 s with 2 threads, 0.015 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> ImageData:
    return image_data()


def rows_of(x: torch.Tensor) -> list[bytes]:
    """Each input row as bytes, to find images again after shuffling."""
    return [bytes(r) for r in (x * 255).round().to(torch.uint8).numpy()]


# --- the rule every benchmark and scenario obeys --------------------------------------------------

SPLIT_EXPECTED = {  # scenario -> (n_outputs, outputs of task t, target of label d in task t)
    "task": (10, lambda t: (2 * t, 2 * t + 1), lambda t, d: d - 2 * t),
    "domain": (2, lambda t: (0, 1), lambda t, d: d % 2),
    "class": (10, lambda t: tuple(range(2 * t + 2)), lambda t, d: d),
}


@pytest.mark.parametrize("build", [split_mnist, split_fashion])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_split_labels_and_outputs(data, build, scenario):
    bench = build(data, scenario=scenario)
    width, outputs_of, target_of = SPLIT_EXPECTED[scenario]
    assert (bench.scenario, bench.n_outputs, len(bench.tasks)) == (scenario, width, 5)
    assert bench.name == ("split-mnist" if build is split_mnist else "split-fashion")
    test_labels = torch.as_tensor(data.test_labels)
    for t, task in enumerate(bench.tasks):
        assert task.classes == (2 * t, 2 * t + 1) and task.outputs == outputs_of(t)
        assert task.name == f"{2 * t}-{2 * t + 1}"
        # The test split holds every test image of the two classes, in order: recover the labels.
        keep = (test_labels // 2) == t
        assert torch.equal(task.test.x, to_inputs(data.test_images)[keep])
        digits = test_labels[keep]
        assert task.test.y.tolist() == [target_of(t, int(d)) for d in digits]
        for split in (task.train, task.valid, task.test):
            assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
            assert split.x.shape[1] == 784
            assert 0 <= int(split.y.min()) and int(split.y.max()) < len(task.outputs)


def test_split_mnist_class_il_task_2_example(data):
    """The brief's example: task 2 holds digits 4, 5 → class targets 4, 5; domain 0, 1; task 0, 1 on (4, 5)."""
    by_scenario = {s: split_mnist(data, scenario=s).tasks[2] for s in SCENARIOS}
    assert sorted(set(by_scenario["class"].test.y.tolist())) == [4, 5]
    assert by_scenario["class"].outputs == (0, 1, 2, 3, 4, 5)
    assert sorted(set(by_scenario["domain"].test.y.tolist())) == [0, 1]
    assert by_scenario["domain"].outputs == (0, 1)
    assert sorted(set(by_scenario["task"].test.y.tolist())) == [0, 1]
    assert by_scenario["task"].outputs == (4, 5)


def their_split_tasks(seed: int) -> tuple[np.ndarray, list[list[int]]]:
    """van de Ven & Tolias's data.py (April 2019, seeds >= 1), with the global NumPy RNG as they use it:
    ``np.random.seed(seed)`` then ``permutation = np.random.permutation(list(range(10)))``; digit d
    gets label ``permutation[d]``; task t keeps the samples whose new label is in [2t, 2t+1]."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        permutation = np.random.permutation(list(range(10)))
    finally:
        np.random.set_state(state)
    labels_per_task = [list(np.array(range(2)) + 2 * task_id) for task_id in range(5)]
    return permutation, labels_per_task


@pytest.mark.parametrize("build", [split_mnist, split_fashion])
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_split_task_order_vandeven2019_is_their_recipe(data, build, seed, scenario):
    permutation, labels_per_task = their_split_tasks(seed)
    bench = build(data, scenario=scenario, seed=seed, task_order="vandeven2019")
    test_digits = np.asarray(data.test_labels)
    new_labels = permutation[test_digits]
    for t, (task, labels) in enumerate(zip(bench.tasks, labels_per_task)):
        keep = np.isin(new_labels, labels)  # their SubDataset(mnist_test, labels), in data-set order
        assert torch.equal(task.test.x, to_inputs(data.test_images)[torch.from_numpy(keep)])
        # Their targets: domain y - labels[0]; task y - 2t (train.py); class the new label itself.
        theirs = new_labels[keep] - (0 if scenario == "class" else labels[0])
        assert task.test.y.tolist() == theirs.tolist()
        digits = tuple(int(np.flatnonzero(permutation == label)[0]) for label in labels)
        assert task.classes == digits and task.name == f"{digits[0]}-{digits[1]}"
        assert task.outputs == SPLIT_EXPECTED[scenario][1](t)
        assert len(task.train) + len(task.valid) == int(np.isin(permutation[np.asarray(data.train_labels)], labels).sum())


def test_split_task_orders_written_out_for_seeds_1_and_2(data):
    """The pairs (digit with target 0, digit with target 1), as the split module's docstring lists them."""
    pairs = {seed: [t.classes for t in split_mnist(data, scenario="domain", seed=seed, task_order="vandeven2019").tasks]
             for seed in (0, 1, 2)}
    assert pairs[1] == [(4, 6), (0, 5), (3, 9), (2, 7), (8, 1)]
    assert pairs[2] == [(3, 1), (5, 6), (0, 2), (7, 4), (9, 8)]
    assert pairs[0] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]  # their seed 0: no shuffle
    # The fixed order ignores the seed; the global NumPy RNG is left alone.
    state = np.random.get_state()[1].copy()
    assert [t.classes for t in split_mnist(data, scenario="domain", seed=2).tasks] == pairs[0]
    assert np.array_equal(np.random.get_state()[1], state)
    with pytest.raises(ValueError, match="unknown task_order 'random'; valid: fixed, vandeven2019"):
        split_mnist(data, scenario="task", task_order="random")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_permuted_labels_and_outputs(data, scenario):
    n_tasks = 3
    bench = permuted_mnist(data, scenario=scenario, n_tasks=n_tasks)
    assert bench.n_outputs == (10 if scenario == "domain" else 10 * n_tasks)
    assert [t.name for t in bench.tasks] == ["P1", "P2", "P3"]
    for t, task in enumerate(bench.tasks):
        assert task.classes == tuple(range(10))
        expected_outputs = {"task": range(10 * t, 10 * t + 10), "domain": range(10), "class": range(10 * t + 10)}
        assert task.outputs == tuple(expected_outputs[scenario])
        offset = 10 * t if scenario == "class" else 0
        assert torch.equal(task.test.y, torch.as_tensor(data.test_labels) + offset)
        assert len(task.train) + len(task.valid) == len(data.train_labels)


SMALL = {"permuted-mnist": {"n_tasks": 3}}  # options that keep a benchmark small in these tests


# the image benchmarks (prose-code's targets are next bytes, its domain scenario has no transform: test_prose_code.py)
IMAGES = [n for n in BENCHMARKS if BENCHMARKS[n].dataset != "text"]


@pytest.mark.parametrize("name, scenario", [(n, s) for n in IMAGES for s in supported_scenarios(n)])
def test_the_target_is_the_column_of_its_unit_after_the_transform(data, name, scenario):
    """One rule for all: after ``logits[:, outputs]``, column y is unit ``outputs[y]`` = the right class."""
    bench = make_benchmark(name, data, scenario=scenario, **SMALL.get(name, {}))
    for t, task in enumerate(bench.tasks):
        # Logits that are one-hot on the unit that should win: the transform must make argmax == y.
        y = task.test.y
        units = torch.tensor(task.outputs)[y]
        logits = torch.nn.functional.one_hot(units, bench.n_outputs).float()
        transform = task_output_transform(task, scenario)
        assert (transform is None) == (scenario == "domain")
        kept = logits if transform is None else transform(logits)
        assert kept.shape == (len(y), len(task.outputs))
        assert torch.equal(kept.argmax(dim=1), y)
        if scenario == "class":
            assert torch.equal(units, y)  # global class index


# --- transforms -----------------------------------------------------------------------------------


def test_select_outputs_picks_the_columns_and_keeps_gradients():
    z = torch.arange(24.0).reshape(2, 12).requires_grad_()
    assert SelectOutputs((4, 5))(z).tolist() == [[4.0, 5.0], [16.0, 17.0]]
    assert SelectOutputs((5, 1, 7))(z).tolist() == [[5.0, 1.0, 7.0], [17.0, 13.0, 19.0]]  # non-contiguous
    SelectOutputs((4, 5))(z).sum().backward()
    assert z.grad.nonzero()[:, 1].unique().tolist() == [4, 5]  # masked units get no gradient
    with pytest.raises(ValueError):
        SelectOutputs(())


def test_transforms_for_training_and_evaluation(data):
    z = torch.arange(10.0).expand(3, 10)
    task_il = split_mnist(data, scenario="task")
    class_il = split_mnist(data, scenario="class")
    domain_il = split_mnist(data, scenario="domain")
    # Training on task 2.
    assert task_output_transform(task_il.tasks[2], "task")(z)[0].tolist() == [4.0, 5.0]
    assert task_output_transform(class_il.tasks[2], "class")(z)[0].tolist() == [0.0, 1, 2, 3, 4, 5]
    assert task_output_transform(domain_il.tasks[2], "domain") is None
    # Evaluating task 0 after training task 2: Task-IL uses task 0's units, Class-IL all seen so far.
    assert eval_output_transform(task_il, trained=2, evaluated=0)(z)[0].tolist() == [0.0, 1.0]
    assert eval_output_transform(class_il, trained=2, evaluated=0)(z)[0].tolist() == [0.0, 1, 2, 3, 4, 5]
    assert eval_output_transform(class_il, trained=2, evaluated=4) == SelectOutputs((0, 1, 2, 3, 4, 5))
    assert eval_output_transform(domain_il, trained=2, evaluated=0) is None
    with pytest.raises(ValueError, match="trained=5"):
        eval_output_transform(class_il, trained=5, evaluated=0)
    with pytest.raises(ValueError, match="valid scenarios: task, domain, class"):
        task_output_transform(task_il.tasks[0], "multi-head")


def test_transforms_with_a_real_model_and_the_training_loop(data):
    """The transforms plug into forgetless.training as they are (loss computes, accuracy in range)."""
    from forgetless.models import mlp
    from forgetless.training import accuracy, train_task

    bench = split_mnist(data, scenario="class")
    model = mlp(784, (16,), bench.n_outputs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    task = bench.tasks[1]
    train_task(model, task.train, steps=3, batch_size=32, optimizer=opt, generator=torch.Generator().manual_seed(0),
               output_transform=task_output_transform(task, "class"))
    # Units of unseen classes (4..9) are never touched in class-IL: their bias has no gradient.
    assert model[-1].bias.grad[4:].abs().sum() == 0 and model[-1].bias.grad[:4].abs().sum() > 0
    acc = accuracy(model, bench.tasks[0].test, output_transform=eval_output_transform(bench, trained=1, evaluated=0))
    assert 0.0 <= acc <= 1.0


# --- permutations ---------------------------------------------------------------------------------


def recover_permutation(base: torch.Tensor, permuted: torch.Tensor) -> torch.Tensor:
    """Oracle: output pixel i is the input pixel whose column (over many images) it equals."""
    columns = {bytes(c): i for i, c in enumerate((base * 255).round().to(torch.uint8).T.contiguous().numpy())}
    assert len(columns) == base.shape[1], "columns not distinct: use more images"
    return torch.tensor([columns[bytes(c)] for c in (permuted * 255).round().to(torch.uint8).T.contiguous().numpy()])


def test_permutations_are_permutations_fixed_per_seed_and_distinct():
    perms = pixel_permutations(4, seed=3)
    for p in perms:
        assert sorted(p.tolist()) == list(range(784))
    assert torch.equal(perms[0], torch.arange(784))  # first task unpermuted by default
    assert all(not torch.equal(perms[i], perms[j]) for i in range(4) for j in range(i))
    again = pixel_permutations(4, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(perms, again))
    other = pixel_permutations(4, seed=4)
    assert not torch.equal(perms[1], other[1])
    # permute_first only changes task 1; later tasks do not depend on it, nor on n_tasks.
    all_permuted = pixel_permutations(4, seed=3, permute_first=True)
    assert not torch.equal(all_permuted[0], torch.arange(784))
    assert all(torch.equal(a, b) for a, b in zip(perms[1:], all_permuted[1:]))
    assert all(torch.equal(a, b) for a, b in zip(pixel_permutations(2, seed=3), perms[:2]))


def test_permutation_is_the_same_in_train_valid_and_test_and_reproducible(data):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    bench = permuted_mnist(data, scenario="domain", n_tasks=3, seed=7, permute_first=True)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not be used"
    expected = pixel_permutations(3, seed=7, permute_first=True)
    base_test = to_inputs(data.test_images)
    base_train = set(rows_of(to_inputs(data.train_images)))
    for task, perm in zip(bench.tasks, expected):
        found = recover_permutation(base_test, task.test.x)
        assert torch.equal(found, perm)
        inverse = torch.argsort(perm)
        for split in (task.train, task.valid):
            # Undo the task's permutation: every row must be an original training image.
            assert set(rows_of(split.x[:, inverse])) <= base_train
    again = permuted_mnist(data, scenario="domain", n_tasks=3, seed=7, permute_first=True)
    for a, b in zip(bench.tasks, again.tasks):
        for part in ("train", "valid", "test"):
            assert torch.equal(getattr(a, part).x, getattr(b, part).x)
            assert torch.equal(getattr(a, part).y, getattr(b, part).y)


def test_first_task_is_plain_mnist_by_default(data):
    task = permuted_mnist(data, scenario="domain", n_tasks=2).tasks[0]
    assert torch.equal(task.test.x, to_inputs(data.test_images))


def test_padding_puts_each_pixel_where_their_recipe_does(data):
    """van de Ven & Tolias: ``transforms.Pad(2)`` (zeros), ``ToTensor`` (/255), then
    ``image.view(c, -1)[:, permutation]`` with a permutation of all 32·32 positions (data.py)."""
    bench = permuted_mnist(data, scenario="domain", n_tasks=3, seed=1, permute_first=True, padding=2)
    perms = pixel_permutations(3, seed=1, permute_first=True, padding=2)
    padded = np.pad(data.test_images, ((0, 0), (2, 2), (2, 2)), mode="constant", constant_values=0)
    assert padded.shape[1:] == (32, 32)
    flat = padded.reshape(len(padded), 1024).astype(np.float32) / 255.0
    for task, perm in zip(bench.tasks, perms):
        assert sorted(perm.tolist()) == list(range(1024))
        assert not torch.equal(perm, torch.arange(1024))  # permute_first: every task permuted, as theirs for seed >= 1
        assert torch.equal(task.test.x, torch.from_numpy(flat[:, perm.numpy()]))
        for split in (task.train, task.valid):
            assert split.x.shape[1] == 1024
        # The 240 padding positions carry no ink in any image of any split; they moved with the permutation.
        border = np.ones((32, 32), bool)
        border[2:30, 2:30] = False
        where = torch.from_numpy(np.flatnonzero(border.reshape(-1)[perm.numpy()]))
        assert len(where) == 240
        assert all(float(split.x[:, where].abs().sum()) == 0.0 for split in (task.train, task.valid, task.test))
    unpadded = permuted_mnist(data, scenario="domain", n_tasks=1, padding=0)
    assert unpadded.tasks[0].test.x.shape[1] == 784
    with pytest.raises(ValueError, match="padding must be a whole number of pixels >= 0, got -1"):
        permuted_mnist(data, scenario="domain", n_tasks=1, padding=-1)


def test_permuted_holds_out_the_same_rows_in_every_task(data):
    bench = permuted_mnist(data, scenario="domain", n_tasks=3, seed=1)
    perms = pixel_permutations(3, seed=1)
    held_out = [set(rows_of(t.valid.x[:, torch.argsort(p)])) for t, p in zip(bench.tasks, perms)]
    assert held_out[0] == held_out[1] == held_out[2]


# --- validation splits ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)  # prose-code's: test_prose_code.py
def test_validation_is_disjoint_from_training_seeded_and_sized(data, name):
    scenario = supported_scenarios(name)[0]
    options = SMALL.get(name, {})
    a = make_benchmark(name, data, scenario=scenario, seed=0, valid_fraction=0.2, **options)
    b = make_benchmark(name, data, scenario=scenario, seed=0, valid_fraction=0.2, **options)
    c = make_benchmark(name, data, scenario=scenario, seed=1, valid_fraction=0.2, **options)
    for ta, tb, tc in zip(a.tasks, b.tasks, c.tasks):
        train, valid = set(rows_of(ta.train.x)), set(rows_of(ta.valid.x))
        assert not train & valid
        n = len(ta.train) + len(ta.valid)
        assert len(ta.valid) == round(0.2 * n)
        assert torch.equal(ta.valid.x, tb.valid.x) and torch.equal(ta.valid.y, tb.valid.y)
        assert not torch.equal(ta.valid.x, tc.valid.x)
        # Test data comes from the test set only.
        assert not set(rows_of(ta.test.x)) & (train | valid)


@pytest.mark.parametrize("name", IMAGES)
def test_valid_fraction_zero_trains_on_everything(data, name):
    scenario = supported_scenarios(name)[0]
    bench = make_benchmark(name, data, scenario=scenario, seed=3, valid_fraction=0.0, **SMALL.get(name, {}))
    held_out = make_benchmark(name, data, scenario=scenario, seed=3, valid_fraction=0.2, **SMALL.get(name, {}))
    for task, other in zip(bench.tasks, held_out.tasks):
        assert len(task.valid) == 0 and task.valid.x.shape == (0, task.train.x.shape[1])
        assert task.valid.x.dtype == torch.float32 and task.valid.y.dtype == torch.int64
        # Every training image of the task, and the same images the 0.2 split shares out.
        assert len(task.train) == len(other.train) + len(other.valid)
        assert set(rows_of(task.train.x)) == set(rows_of(other.train.x)) | set(rows_of(other.valid.x))


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_valid_fraction_outside_0_1_is_refused(data, fraction):
    with pytest.raises(ValueError, match=r"valid_fraction must be in \[0, 1\), got"):
        split_mnist(data, scenario="task", valid_fraction=fraction)


# --- registry -------------------------------------------------------------------------------------


def test_registry_names_and_datasets():
    assert list(BENCHMARKS) == ["seed-split", "split-mnist", "permuted-mnist", "split-fashion", "prose-code"]
    assert {n: required_dataset(n) for n in BENCHMARKS} == {
        "seed-split": "mnist", "split-mnist": "mnist", "permuted-mnist": "mnist", "split-fashion": "fashion",
        "prose-code": "text",
    }


def test_supported_scenarios_agree_with_the_builders(data):
    small = image_data(60, 20)
    for name in IMAGES:
        options = SMALL.get(name, {})
        for scenario in SCENARIOS:
            if scenario in supported_scenarios(name):
                assert make_benchmark(name, small, scenario=scenario, **options).scenario == scenario
            else:
                with pytest.raises(ValueError):
                    make_benchmark(name, small, scenario=scenario, **options)


def test_unknown_names_scenarios_and_options_list_the_valid_ones(data):
    with pytest.raises(ValueError, match="valid benchmarks: seed-split, split-mnist, permuted-mnist, split-fashion"):
        make_benchmark("split-cifar", data, scenario="task")
    with pytest.raises(ValueError, match="valid benchmarks"):
        required_dataset("nope")
    with pytest.raises(ValueError, match="valid scenarios: task, domain, class"):
        make_benchmark("split-mnist", data, scenario="instance")
    with pytest.raises(ValueError, match="valid options: n_tasks, valid_fraction, permute_first, padding"):
        make_benchmark("permuted-mnist", data, scenario="task", permute=True)


@pytest.mark.parametrize("scenario", ["task", "class"])
def test_seed_split_refuses_other_scenarios_with_a_reason(data, scenario):
    with pytest.raises(ValueError, match="only the domain scenario.*5-way head.*split-mnist"):
        make_benchmark("seed-split", data, scenario=scenario)
    bench = make_benchmark("seed-split", data, scenario="domain")
    assert (bench.name, bench.n_outputs, bench.scenario) == ("seed-split", 5, "domain")


def test_bad_inputs_are_refused_clearly(data):
    with pytest.raises(ValueError, match="n_tasks"):
        permuted_mnist(data, scenario="task", n_tasks=0)
    bad = ImageData(data.train_images, data.train_labels + 1, data.test_images, data.test_labels, "shifted")
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        split_mnist(bad, scenario="class")
    for shifted in (bad, ImageData(data.train_images, data.train_labels, data.test_images, data.test_labels - 1, "x")):
        # seed-split used to build these, then crash mid-training on a target beyond its 5-way head
        with pytest.raises(ValueError, match=r"^(shifted|x): labels must lie in 0..9, got (1..10|-1..8)$"):
            make_benchmark("seed-split", shifted, scenario="domain")
    no_fives = ImageData(data.train_images[data.train_labels // 2 != 2], data.train_labels[data.train_labels // 2 != 2],
                         data.test_images, data.test_labels, "partial")
    with pytest.raises(ValueError, match="task 4-5 has 0 training images"):
        split_mnist(no_fives, scenario="task")
