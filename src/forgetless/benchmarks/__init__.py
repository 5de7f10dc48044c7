"""Continual-learning benchmarks as plain data: a list of tasks with tensors."""
from .base import Benchmark, Split, Task
from .permuted import permuted_mnist, pixel_permutations
from .registry import BENCHMARKS, benchmark_options, make_benchmark, required_dataset, supported_scenarios
from .scenarios import SCENARIOS, SelectOutputs, eval_output_transform, task_output_transform
from .seed_split import seed_split
from .split import TASK_ORDERS, class_order, split_fashion, split_mnist

__all__ = [
    "BENCHMARKS",
    "SCENARIOS",
    "Benchmark",
    "SelectOutputs",
    "Split",
    "TASK_ORDERS",
    "Task",
    "benchmark_options",
    "class_order",
    "eval_output_transform",
    "make_benchmark",
    "permuted_mnist",
    "pixel_permutations",
    "required_dataset",
    "seed_split",
    "split_fashion",
    "split_mnist",
    "supported_scenarios",
    "task_output_transform",
]
