"""Continual-learning benchmarks as plain data: a list of tasks with tensors."""
from .base import Benchmark, Split, Task
from .permuted import permuted_mnist, pixel_permutations
from .post_split import post_split
from .registry import (
    BENCHMARKS,
    benchmark_options,
    data_fingerprint,
    load_data,
    make_benchmark,
    make_model,
    model_option_specs,
    required_dataset,
    supported_scenarios,
)
from .scenarios import SCENARIOS, SelectOutputs, eval_output_transform, task_output_transform
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
    "data_fingerprint",
    "eval_output_transform",
    "load_data",
    "make_benchmark",
    "make_model",
    "model_option_specs",
    "permuted_mnist",
    "pixel_permutations",
    "post_split",
    "required_dataset",
    "split_fashion",
    "split_mnist",
    "supported_scenarios",
    "task_output_transform",
]
