"""Config files: YAML is read as strictly as TOML (issue 15 item 11)."""
import pytest

from forgetless.config import ConfigError, read_config_file


def _read(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return read_config_file(path)


def test_a_key_given_twice_in_yaml_is_refused_like_in_toml(tmp_path):
    """PyYAML kept the last value silently."""
    with pytest.raises(ConfigError) as info:
        _read(tmp_path, "c.yaml", "method: ewc\nstrength: 10\nlr: 0.01\nstrength: 1000\n")
    assert str(info.value) == (f"config file {tmp_path / 'c.yaml'} could not be parsed: "
                               "key 'strength' appears twice (lines 2 and 4); keep one")
    with pytest.raises(ConfigError, match="could not be parsed"):
        _read(tmp_path, "c.toml", "strength = 10\nstrength = 1000\n")
    with pytest.raises(ConfigError, match=r"key 'decay' appears twice \(lines 3 and 4\)"):
        _read(tmp_path, "nested.yml", "grid:\n  strength: [1, 2]\n  decay: 0.9\n  decay: 0.5\n")


def test_the_same_key_in_different_tables_is_fine(tmp_path):
    assert _read(tmp_path, "c.yaml", "a:\n  x: 1\nb:\n  x: 2\n") == {"a": {"x": 1}, "b": {"x": 2}}


@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("5E+2", 500.0), ("-2e4", -2e4), ("1.5e-3", 1.5e-3), ("1.0", 1.0), (".5", 0.5),
    ("1_000.5", 1000.5), (".inf", float("inf")), ("1000", 1000), ("0x10", 16),
    ("1e", "1e"), ("e5", "e5"), ("1.2.3", "1.2.3"), ("'1e-3'", "1e-3"),
])
def test_yaml_numbers_are_numbers_as_in_yaml_1_2(tmp_path, text, value):
    """PyYAML read 1e-3 as the text '1e-3' (its YAML 1.1 float needs a dot)."""
    got = _read(tmp_path, "n.yaml", f"lr: {text}\n")["lr"]
    assert got == value and type(got) is type(value)


def test_pyyaml_itself_is_left_as_it_is(tmp_path):
    import yaml

    _read(tmp_path, "n.yaml", "lr: 1e-3\n")
    assert yaml.safe_load("lr: 1e-3\nlr: 2") == {"lr": 2}  # other users of PyYAML see no change
