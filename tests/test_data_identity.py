"""Data folders are identified by sha256 (issue 15 item 10): a 100-image set is not "MNIST", MNIST's
digits are not Fashion-MNIST; other data runs only when allowed, and then says so in its source."""
import os

import numpy as np
import pytest

import forgetless.data.fashion as fashion_mod
import forgetless.data.identity as identity_mod
from forgetless.data import (DataError, FASHION_MNIST_IDX_SHA256, identify, load_fashion_mnist, load_mnist,
                             resolve_cache_dir)
from forgetless.data.idx import find_idx_files

from test_data_mnist import NAMES, assert_hand_packed_digests, write_set

# Read before any fixture points the cache elsewhere: where `make fashion-mnist` unpacks without root.
USER_FASHION_CACHE = resolve_cache_dir() / fashion_mod.CACHE_SUBDIR


def _real_fashion_dir():
    if os.path.isdir(fashion_mod.SYSTEM_DIR):
        return fashion_mod.SYSTEM_DIR
    return USER_FASHION_CACHE if USER_FASHION_CACHE.is_dir() and not find_idx_files(USER_FASHION_CACHE)[1] else None


needs_fashion = pytest.mark.skipif(
    _real_fashion_dir() is None,
    reason="Fashion-MNIST is not installed: run `make fashion-mnist` in the checkout (no root needed), "
           "or `sudo apt-get install dataset-fashion-mnist`")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for var in ("FORGETLESS_DATA", "FORGETLESS_CACHE", "FORGETLESS_FASHION_DATA", "FORGETLESS_ALLOW_OTHER_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_a_small_set_is_refused_as_mnist_unless_other_data_is_allowed(tmp_path, monkeypatch):
    """It ran as "split-mnist"."""
    write_set(tmp_path / "d", n_train=100, n_test=20)
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path / "d")
    assert str(info.value) == (
        f"{tmp_path / 'd'} does not hold MNIST: found 100 training and 20 test images matching no known data "
        "set. Pass the folder of the standard MNIST files, or use other data on purpose with allow_unknown=True "
        "(forgetless CLI: --allow-other-data; or set FORGETLESS_ALLOW_OTHER_DATA=1)")
    allowed = load_mnist(tmp_path / "d", allow_unknown=True)
    assert allowed.source == f"{tmp_path / 'd'} (not MNIST: 100 training and 20 test images matching no known data set)"
    monkeypatch.setenv("FORGETLESS_ALLOW_OTHER_DATA", "0")
    with pytest.raises(DataError, match="does not hold MNIST"):
        load_mnist(tmp_path / "d")
    monkeypatch.setenv("FORGETLESS_ALLOW_OTHER_DATA", "1")
    assert load_mnist(tmp_path / "d").source == allowed.source


def test_a_set_registered_as_one_data_set_is_refused_as_the_other_and_mixes_are_described(tmp_path, monkeypatch):
    """The logic on small stand-ins: set A plays MNIST, so A's files given as Fashion-MNIST are named."""
    arrays = write_set(tmp_path / "a", seed=1)
    digests = {name: identity_mod.idx_sha256(np.asarray(a).astype(np.uint8)) for name, a in zip(NAMES, arrays)}
    monkeypatch.setattr(identity_mod, "MNIST_IDX_SHA256", digests)
    assert load_mnist(tmp_path / "a").source == str(tmp_path / "a")  # identified: used as is
    with pytest.raises(DataError, match=r"does not hold Fashion-MNIST: found the four files of MNIST\. "):
        load_fashion_mnist(tmp_path / "a")
    write_set(tmp_path / "mix", seed=2)
    for name in NAMES[:2]:  # A's training files, other test files
        (tmp_path / "mix" / f"{name}.gz").write_bytes((tmp_path / "a" / f"{name}.gz").read_bytes())
    with pytest.raises(DataError, match=r"found 6 training and 4 test images: train-images-idx3-ubyte is MNIST's, "
                                        r"train-labels-idx1-ubyte is MNIST's, the others match no known data set\."):
        load_mnist(tmp_path / "mix")


def test_labels_beyond_a_byte_are_simply_unknown():
    from forgetless.data import ImageData

    x = np.zeros((2, 28, 28), np.uint8)
    assert identify(ImageData(x, np.array([0, 300]), x, np.array([1, 2]), "toy"))[0] is None


def test_a_file_where_a_folder_is_expected_is_called_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    for load in (load_mnist, load_fashion_mnist):
        with pytest.raises(DataError, match=r"data directory .*f is a file, not a directory"):
            load(tmp_path / "f")


def test_fashion_download_is_refused_clearly_when_it_would_be_needed(tmp_path, monkeypatch):
    """`--download` was silently ignored for split-fashion."""
    monkeypatch.setattr(fashion_mod, "SYSTEM_DIR", str(tmp_path / "none"))
    with pytest.raises(DataError, match=r"forgetless has no download for it \(--download fetches MNIST only\)"
                                        r"\. Fix: `sudo apt-get install dataset-fashion-mnist`; .*`make fashion-mnist`"):
        load_fashion_mnist(download=True)
    write_set(tmp_path / "xdg" / "forgetless" / "fashion-mnist")  # a local copy: download is not needed
    assert len(load_fashion_mnist(download=True, allow_unknown=True).train_labels) == 6


@needs_fashion
def test_real_fashion_mnist_is_identified_and_its_digests_recomputed_by_hand():
    data = load_fashion_mnist(_real_fashion_dir())
    assert data.source == str(_real_fashion_dir())
    assert data.train_images.shape == (60000, 28, 28) and data.test_labels.shape == (10000,)
    assert data.train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert_hand_packed_digests(data, FASHION_MNIST_IDX_SHA256)


@needs_fashion
def test_real_fashion_mnist_is_refused_as_mnist():
    with pytest.raises(DataError, match=r"does not hold MNIST: found the four files of Fashion-MNIST\."):
        load_mnist(_real_fashion_dir())
