"""The config files shipped under configs/ must stay valid as the code changes."""
from pathlib import Path

import pytest

from forgetless.config import read_config_file
from forgetless.run_config import RunConfig, run_config
from forgetless.sweep import expand, read_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "vandeven2019").glob("*.toml")), ids=lambda p: p.stem)
def test_reproduction_configs_build_their_protocol(path):
    settings = read_config_file(path)
    assert settings.pop("strength") == "auto"  # chosen on validation data, as the paper's table asks
    config = run_config(settings)
    assert config.reset_optimizer is False     # their code keeps one Adam for the whole sequence
    assert config.batch_size == 128
    expected = {"split-mnist": ((400, 400), 1e-3, 2000), "permuted-mnist": ((1000, 1000), 1e-4, 5000)}
    assert (config.hidden, config.lr, config.iterations) == expected[config.benchmark]


@pytest.mark.parametrize("path", sorted((CONFIGS / "sweeps").glob("*.toml")), ids=lambda p: p.stem)
def test_sweep_configs_expand_to_valid_runs(path):
    runs = expand(read_sweep(path))
    assert runs and all(isinstance(run.config, RunConfig) for run in runs)
