"""IDX parsing and writing: round trips and every way a file can be broken."""

import gzip
import struct

import numpy as np
import pytest

from forgetless.data import DataError, ImageData, encode_idx, load_idx_dir, load_idx_pair, read_idx, write_idx
from forgetless.data.idx import parse_idx


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    path = write_idx(tmp_path / f"x-idx3{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == array.dtype and back.flags.writeable
    np.testing.assert_array_equal(back, array)


def test_header_is_the_standard_big_endian_layout():
    data = encode_idx(np.array([[1, 2, 3]], dtype=np.int16))
    assert data[:4] == bytes([0, 0, 0x0B, 2])
    assert struct.unpack(">II", data[4:12]) == (1, 3)
    assert data[12:] == b"\x00\x01\x00\x02\x00\x03"


def test_compression_detected_by_content_not_name(tmp_path):
    array = _images(2)
    gz_without_suffix = write_idx(tmp_path / "plain-name", array, compress=True)
    raw_with_suffix = write_idx(tmp_path / "looks.gz", array, compress=False)
    np.testing.assert_array_equal(read_idx(gz_without_suffix), array)
    np.testing.assert_array_equal(read_idx(raw_with_suffix), array)


def test_truncated_gzip_names_the_file(tmp_path):
    data = gzip.compress(encode_idx(_images(5)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_gzip_magic_followed_by_garbage(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_non_gzip_garbage_with_gz_name(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize("content", [b"\x01\x00\x08\x01\x00\x00\x00\x01\x07",
                                     b"\x00\x01\x08\x01\x00\x00\x00\x01\x07", b"", b"\x00\x00"])
def test_wrong_magic(tmp_path, content):
    path = tmp_path / "f"
    path.write_bytes(content)
    with pytest.raises(DataError, match="f: not an IDX file"):
        read_idx(path)


def test_unknown_dtype_code_and_zero_dims():
    with pytest.raises(DataError, match="unknown IDX dtype code 0x07"):
        parse_idx(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataError, match="0 dimensions"):
        parse_idx(b"\x00\x00\x08\x00")


def test_truncated_header():
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(b"\x00\x00\x08\x03\x00\x00\x00\x02")


@pytest.mark.parametrize("delta, word", [(-1, "truncated"), (+3, "has trailing bytes")])
def test_payload_length_mismatch_names_the_file(tmp_path, delta, word):
    data = encode_idx(_images(3))
    data = data[:delta] if delta < 0 else data + b"\x00" * delta
    path = tmp_path / "imgs.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DataError, match=rf"imgs\.gz: {word}: header says shape \(3, 28, 28\)"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read .*nope"):
        read_idx(tmp_path / "nope")


def test_unsupported_dtype_cannot_be_written():
    with pytest.raises(DataError, match="cannot write dtype int64"):
        encode_idx(np.zeros(3, np.int64))


def test_pair_ok_and_labels_become_int64(tmp_path):
    images, labels = _images(4), np.array([3, 1, 4, 1], np.uint8)
    x, y = load_idx_pair(write_idx(tmp_path / "i", images), write_idx(tmp_path / "l.gz", labels))
    np.testing.assert_array_equal(x, images)
    assert y.dtype == np.int64 and y.tolist() == [3, 1, 4, 1]


def test_pair_count_mismatch(tmp_path):
    i = write_idx(tmp_path / "i", _images(4))
    l = write_idx(tmp_path / "l", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="has 4 images but .* has 5 labels"):
        load_idx_pair(i, l)


@pytest.mark.parametrize("images", [np.zeros((4, 784), np.uint8), np.zeros((4, 32, 32), np.uint8),
                                    np.zeros((4, 28, 28), np.float32)])
def test_pair_rejects_non_mnist_images(tmp_path, images):
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(N, 28, 28\)"):
        load_idx_pair(write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", np.zeros(4, np.uint8)))


def test_pair_rejects_swapped_files(tmp_path):
    i = write_idx(tmp_path / "i", _images(4))
    with pytest.raises(DataError, match="expected 1-D integer labels"):
        load_idx_pair(i, i)


def _write_set(directory, names, gz=True, n=(5, 3)):
    directory.mkdir(parents=True, exist_ok=True)
    arrays = [_images(n[0], 1), np.arange(n[0]) % 10, _images(n[1], 2), np.arange(n[1]) % 10]
    for name, array in zip(names, arrays):
        write_idx(directory / (name + (".gz" if gz else "")), array.astype(np.uint8))
    return arrays


STANDARD = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte"]


@pytest.mark.parametrize("gz", [False, True])
def test_load_dir(tmp_path, gz):
    arrays = _write_set(tmp_path, STANDARD, gz=gz)
    data = load_idx_dir(tmp_path)
    assert data.source == str(tmp_path)
    for got, want in zip([data.train_images, data.train_labels, data.test_images, data.test_labels], arrays):
        np.testing.assert_array_equal(got, want)


def test_load_dir_accepts_dotted_names(tmp_path):
    _write_set(tmp_path, [n.replace("-idx", ".idx") for n in STANDARD], gz=False)
    assert len(load_idx_dir(tmp_path).train_labels) == 5


def test_load_dir_prefers_raw_over_gz(tmp_path):
    _write_set(tmp_path, STANDARD, gz=True, n=(5, 3))
    _write_set(tmp_path, STANDARD, gz=False, n=(7, 3))
    assert len(load_idx_dir(tmp_path).train_labels) == 7


def test_load_dir_missing_and_incomplete(tmp_path):
    with pytest.raises(DataError, match="data directory .*absent does not exist"):
        load_idx_dir(tmp_path / "absent", "data directory")
    _write_set(tmp_path, STANDARD)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte \\(raw or .gz\\)") as err:
        load_idx_dir(tmp_path)
    assert "\n" not in str(err.value)


def test_image_data_validates_and_has_short_repr():
    x, y = _images(2), np.array([1, 2])
    data = ImageData(x, y, x, y, "here")
    assert repr(data) == "ImageData(train=2, test=2, source='here')"
    with pytest.raises(DataError, match="train labels must be int64"):
        ImageData(x, y.astype(np.int32), x, y, "here")
    with pytest.raises(DataError, match="test images must be uint8"):
        ImageData(x, y, x.astype(np.float32), y, "here")
    with pytest.raises(AttributeError):
        data.source = "elsewhere"
