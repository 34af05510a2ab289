"""Tests of nas.data against real files: IDX, CIFAR pickles, PNG/JPEG folders, HTTP downloads."""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import http.server
import pickle
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effnas import data
from effnas.data import (
    Batches,
    DataError,
    ImageDataset,
    channel_stats,
    load_dataset,
    load_splits,
    prepare,
    split_train_minival,
)

FASHION_ROOT = data.get_source("fashion_mnist").default_root
# .ci/run installs Debian's dataset-fashion-mnist: a missing copy is a failure, never a skip.
assert (FASHION_ROOT / "train-images-idx3-ubyte.gz").is_file(), (
    f"Fashion-MNIST not installed at {FASHION_ROOT}: apt-get install dataset-fashion-mnist")


def needs_fashion(test):  # kept as a marker of which tests read the real data set
    return test


def one_line_error(excinfo: pytest.ExceptionInfo[DataError], *needles: str) -> str:
    """Every user-facing error must be one line and mention what it is about."""
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------- file writers


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Serialise a uint8 array as IDX (magic 0x0000080<ndim> unless overridden)."""
    magic = 0x0800 | array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(
    root: Path,
    n_train: int = 12,
    n_test: int = 6,
    size: int = 28,
    compress: bool = True,
    seed: int = 0,
) -> dict[str, bytes]:
    """Write the four standard IDX files; returns file name -> bytes written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images_stem, labels_stem = data.IDX_FILES[split]
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for stem, array in ((images_stem, images), (labels_stem, labels)):
            payload = idx_bytes(array)
            name = stem
            if compress:
                payload, name = gzip.compress(payload, mtime=0), f"{stem}.gz"
            (root / name).write_bytes(payload)
            written[name] = payload
    return written


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def gray(value: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.full(size, value, dtype=np.uint8)


def synthetic(n: int = 100, channels: int = 3, size: int = 32, seed: int = 0) -> ImageDataset:
    """Random images whose first pixels encode the index, so splits can be checked for overlap."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    index = torch.arange(n)
    images[:, 0, 0, 0] = (index % 256).to(torch.uint8)
    images[:, 0, 0, 1] = (index // 256).to(torch.uint8)
    return ImageDataset(images, index % 10, tuple(f"c{i}" for i in range(10)), "synthetic")


def decoded_index(ds: ImageDataset) -> set[int]:
    return set((ds.images[:, 0, 0, 0].long() + 256 * ds.images[:, 0, 0, 1].long()).tolist())


# --------------------------------------------------------------------------- module layering


def test_package_imports_nothing_from_the_rest_of_the_project() -> None:
    """effnas.data is the bottom layer of the engine: its modules import each other and the config
    schema base only."""
    root = Path(data.__file__).parent
    for path in root.rglob("*.py"):
        package = ["effnas", "data", *path.relative_to(root).parent.parts]
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
                assert target[:2] == ["effnas", "data"] or target == ["effnas", "schema"], (path, node.module)
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                top = name.split(".")[0]
                assert top not in ("nas", "search_space", "scaling_search", "report"), (path, name)
                assert top != "effnas" or name.startswith("effnas.data"), (path, name)


# --------------------------------------------------------------------------- real Fashion-MNIST


@pytest.fixture(scope="module")
def fashion_train() -> ImageDataset:
    return load_dataset("fashion_mnist")


@needs_fashion
def test_fashion_mnist_real_files(fashion_train: ImageDataset) -> None:
    test = load_dataset("fashion_mnist", split="test")
    assert fashion_train.images.shape == (60000, 1, 28, 28)
    assert test.images.shape == (10000, 1, 28, 28)
    for ds in (fashion_train, test):
        assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
        assert ds.num_classes == 10 and ds.in_channels == 1
        assert int(ds.labels.min()) == 0 and int(ds.labels.max()) == 9
        assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    # The official splits are balanced: 6000 / 1000 images per class.
    assert torch.bincount(fashion_train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert 0.2 < fashion_train.images.float().mean().item() / 255 < 0.4


@needs_fashion
def test_load_splits_fashion_mnist_is_prepared() -> None:
    splits = load_splits("fashion_mnist", resolution=32, minival_size=5000, train_size=2000, seed=3)
    assert splits.train.images.shape == (2000, 1, 32, 32)
    assert splits.minival.images.shape == (5000, 1, 32, 32)
    assert splits.test.images.shape == (10000, 1, 32, 32)
    assert (splits.num_classes, splits.in_channels, splits.resolution) == (10, 1, 32)
    assert splits.name == "fashion_mnist"
    assert len(splits.mean) == len(splits.std) == 1
    assert 0.2 < splits.mean[0] < 0.4 and 0.25 < splits.std[0] < 0.45
    with pytest.raises(DataError) as excinfo:
        load_splits("fashion_mnist", minival_size=5000, train_size=55001)
    one_line_error(excinfo, "train_size", "55000")


@needs_fashion
def test_fashion_split_is_deterministic_and_disjoint(fashion_train: ImageDataset) -> None:
    train_a, minival_a = split_train_minival(fashion_train, 0.1, seed=7)
    train_b, minival_b = split_train_minival(fashion_train, 0.1, seed=7)
    _, minival_c = split_train_minival(fashion_train, 0.1, seed=8)
    assert (len(train_a), len(minival_a)) == (54000, 6000)
    assert torch.equal(minival_a.images, minival_b.images) and torch.equal(train_a.labels, train_b.labels)
    assert not torch.equal(minival_a.images, minival_c.images)


# --------------------------------------------------------------------------- dataset container


def test_image_dataset_validates_and_subsets() -> None:
    ds = synthetic(20, channels=3, size=32)
    assert len(ds) == 20 and ds.in_channels == 3 and ds.num_classes == 10 and ds.image_size == (32, 32)
    sub = ds.subset([3, 1, 4])
    assert decoded_index(sub) == {1, 3, 4} and sub.labels.tolist() == [3, 1, 4]
    assert sub.classes == ds.classes and sub.name == ds.name
    assert "synthetic" in repr(sub) and "(3, 3, 32, 32)" in repr(sub)
    with pytest.raises(DataError) as excinfo:
        ds.subset([0, 20])
    one_line_error(excinfo, "0..19")
    with pytest.raises(DataError):
        ImageDataset(ds.images.float(), ds.labels, ds.classes, "x")
    with pytest.raises(DataError) as excinfo:
        ImageDataset(ds.images, ds.labels[:5], ds.classes, "x")
    one_line_error(excinfo, "20 images but 5 labels")
    with pytest.raises(DataError) as excinfo:
        ImageDataset(ds.images, ds.labels, ("a", "b"), "x")
    one_line_error(excinfo, "expected 0..1")


# --------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_files_load(tmp_path: Path, compress: bool) -> None:
    write_mnist(tmp_path, n_train=12, n_test=6, compress=compress)
    train = load_dataset("mnist", tmp_path)
    test = load_dataset("mnist", tmp_path, split="test")
    assert train.images.shape == (12, 1, 28, 28) and test.images.shape == (6, 1, 28, 28)
    assert train.labels.tolist() == [i % 10 for i in range(12)]
    assert train.classes == tuple("0123456789") and train.name == "mnist"
    raw = np.frombuffer(
        gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
        if compress else (tmp_path / "train-images-idx3-ubyte").read_bytes(),
        dtype=np.uint8, offset=16,
    ).reshape(12, 28, 28)
    assert torch.equal(train.images[:, 0], torch.from_numpy(raw.copy()))


def _rewrite(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload, mtime=0))


def test_idx_wrong_magic(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    images = np.zeros((12, 28, 28), dtype=np.uint8)
    _rewrite(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(images, magic=0x00000801))
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, "train-images-idx3-ubyte.gz", "magic", "0x00000801", "expected 0x00000803")


def test_idx_truncated(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    payload = idx_bytes(np.zeros((12, 28, 28), dtype=np.uint8))
    _rewrite(tmp_path / "train-images-idx3-ubyte.gz", payload[:-100])
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, "train-images-idx3-ubyte.gz", "truncated", str(len(payload)))
    _rewrite(tmp_path / "train-images-idx3-ubyte.gz", payload[:10])  # inside the header
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, "truncated")


def test_idx_trailing_bytes(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    _rewrite(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(6, dtype=np.uint8)) + b"\0")
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path, split="test")
    one_line_error(excinfo, "t10k-labels-idx1-ubyte.gz", "1 trailing bytes")


def test_idx_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=12)
    _rewrite(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(11, dtype=np.uint8)))
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(
        excinfo, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "12 images", "11 labels"
    )


def test_idx_label_out_of_range(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=12)
    labels = np.zeros(12, dtype=np.uint8)
    labels[5] = 10
    _rewrite(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(labels))
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, "train-labels-idx1-ubyte.gz", "label 10 at index 5", "0..9")


def test_idx_corrupt_gzip_and_missing_file(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data")
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path, split="test")
    one_line_error(excinfo, "t10k-images-idx3-ubyte.gz", "gzip")
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", tmp_path)
    one_line_error(excinfo, "train-labels-idx1-ubyte[.gz] not found", str(tmp_path), "download=True")


# --------------------------------------------------------------------------- downloads


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
        pass


@pytest.fixture()
def http_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str, list[str]]]:
    """A real HTTP server on 127.0.0.1 serving a directory; yields (dir, base_url, request log)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    served = tmp_path / "served"
    served.mkdir()
    handler = type("Handler", (_CountingHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/mirror", handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_verifies_md5_and_skips_present_files(
    tmp_path: Path, http_dir: tuple[Path, str, list[str]]
) -> None:
    served, base_url, requests = http_dir
    written = write_mnist(served / "mirror", n_train=10, n_test=5)
    md5s = {name: hashlib.md5(payload).hexdigest() for name, payload in written.items()}
    root = tmp_path / "downloaded"
    ds = load_dataset("mnist", root, download=True, base_url=base_url, md5s=md5s)
    assert ds.images.shape == (10, 1, 28, 28)
    assert sorted(p.name for p in root.iterdir()) == sorted(written)
    assert len(requests) == 4
    # Present and valid: nothing is fetched again.
    load_dataset("mnist", root, split="test", download=True, base_url=base_url, md5s=md5s)
    assert len(requests) == 4
    # A corrupted local copy is replaced by a fresh, verified download.
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    test = load_dataset("mnist", root, split="test", download=True, base_url=base_url, md5s=md5s)
    assert len(requests) == 5 and requests[-1] == "/mirror/t10k-labels-idx1-ubyte.gz"
    assert test.labels.tolist() == [0, 1, 2, 3, 4]


def test_download_md5_mismatch_leaves_nothing(tmp_path: Path, http_dir: tuple[Path, str, list[str]]) -> None:
    served, base_url, _ = http_dir
    written = write_mnist(served / "mirror")
    md5s = {name: hashlib.md5(payload).hexdigest() for name, payload in written.items()}
    md5s["train-labels-idx1-ubyte.gz"] = hashlib.md5(b"other bytes").hexdigest()
    root = tmp_path / "downloaded"
    with pytest.raises(DataError) as excinfo:
        load_dataset("mnist", root, download=True, base_url=base_url, md5s=md5s)
    one_line_error(excinfo, "train-labels-idx1-ubyte.gz", "MD5", md5s["train-labels-idx1-ubyte.gz"])
    names = sorted(p.name for p in root.iterdir())
    assert names == ["train-images-idx3-ubyte.gz"], names  # verified before the bad one; no partial file


def test_download_http_error(tmp_path: Path, http_dir: tuple[Path, str, list[str]]) -> None:
    _, base_url, _ = http_dir
    with pytest.raises(DataError) as excinfo:
        data.download_idx("fashion_mnist", tmp_path / "dl", base_url=base_url)
    one_line_error(excinfo, "download of", "train-images-idx3-ubyte.gz", "failed")
    assert list((tmp_path / "dl").iterdir()) == []


def test_default_sources_are_the_official_ones() -> None:
    assert data.IDX_SOURCES["mnist"].md5s["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    fashion = data.IDX_SOURCES["fashion_mnist"].md5s
    assert fashion["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"
    for source in data.IDX_SOURCES.values():
        assert source.base_url.startswith(("http://", "https://")) and len(source.md5s) == 4


# --------------------------------------------------------------------------- CIFAR-10


def write_cifar(directory: Path, per_batch: int = 4, protocol: int = 2) -> np.ndarray:
    """Write the CIFAR-10 python-version files; returns the training data rows in order."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch_data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        blob = {b"batch_label": name.encode(), b"labels": labels, b"data": batch_data, b"filenames": []}
        (directory / name).write_bytes(pickle.dumps(blob, protocol=protocol))
        if name != "test_batch":
            rows.append(batch_data)
    meta = {b"label_names": [n.encode() for n in data.CIFAR10_CLASSES], b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return np.concatenate(rows)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_python_batches(tmp_path: Path, protocol: int) -> None:
    rows = write_cifar(tmp_path / "cifar-10-batches-py", per_batch=4, protocol=protocol)
    train = load_dataset("cifar10", tmp_path)
    test = load_dataset("cifar10", tmp_path / "cifar-10-batches-py", split="test")
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.classes == data.CIFAR10_CLASSES and train.in_channels == 3
    # Rows are channel-major: 1024 red, then green, then blue values.
    assert torch.equal(train.images[7, 1].flatten(), torch.from_numpy(rows[7, 1024:2048].copy()))


def test_cifar10_errors(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", tmp_path)
    one_line_error(excinfo, "data_batch_3 not found", "test_batch")
    # A pickle that would run code is refused, not executed.
    (tmp_path / "test_batch").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", tmp_path, split="test")
    one_line_error(excinfo, "test_batch", "refusing")
    bad = {b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError) as excinfo:
        load_dataset("cifar10", tmp_path, split="test")
    one_line_error(excinfo, "test_batch", "N x 3072")


# --------------------------------------------------------------------------- image folders


def test_image_folder_flat_grayscale(tmp_path: Path) -> None:
    write_png(tmp_path / "cat" / "a.png", gray(10))
    write_png(tmp_path / "cat" / "b.png", gray(20, (16, 16)))  # resized to the first image's 8x8
    write_png(tmp_path / "dog" / "c.png", gray(200))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = load_dataset("image_folder", tmp_path)
    assert ds.classes == ("cat", "dog") and ds.labels.tolist() == [0, 0, 1]
    assert ds.images.shape == (3, 1, 8, 8)
    assert ds.images[:, 0, 4, 4].tolist() == [10, 20, 200]
    sized = load_dataset("image_folder", tmp_path, image_size=(4, 6))
    assert sized.images.shape == (3, 1, 4, 6)
    with pytest.raises(DataError) as excinfo:
        load_dataset("image_folder", tmp_path, split="test")
    one_line_error(excinfo, "no train/ and test/", "split='train'")


def test_image_folder_mixed_modes_become_rgb_with_splits(tmp_path: Path) -> None:
    write_png(tmp_path / "train" / "a" / "1.png", gray(50))
    write_png(tmp_path / "train" / "b" / "1.png", gray(60))
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    write_png(tmp_path / "test" / "b" / "1.png", rgb)  # colour only in the test split
    Image.fromarray(gray(90)).save(tmp_path / "test" / "b" / "2.jpg", quality=95)
    train = load_dataset("image_folder", tmp_path)
    test = load_dataset("image_folder", tmp_path, split="test")
    assert train.in_channels == test.in_channels == 3
    assert train.images[0, :, 0, 0].tolist() == [50, 50, 50]
    assert test.labels.tolist() == [1, 1] and test.images[0, :, 0, 0].tolist() == [255, 0, 0]
    assert abs(int(test.images[1, 0, 4, 4]) - 90) <= 2
    assert train.classes == test.classes == ("a", "b")


def test_image_folder_one_class_and_corrupt_image(tmp_path: Path) -> None:
    write_png(tmp_path / "only" / "a.png", gray(1))
    with pytest.raises(DataError) as excinfo:
        load_dataset("image_folder", tmp_path)
    one_line_error(excinfo, "1 class folder", "at least 2")
    write_png(tmp_path / "other" / "a.png", gray(2))
    (tmp_path / "other" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError) as excinfo:
        load_dataset("image_folder", tmp_path)
    one_line_error(excinfo, "broken.png", "cannot read image")


def test_image_folder_truncated_png(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "ok.png", np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) % 251)
    write_png(tmp_path / "b" / "cut.png", np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) % 241)
    full = (tmp_path / "b" / "cut.png").read_bytes()
    (tmp_path / "b" / "cut.png").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError) as excinfo:
        load_dataset("image_folder", tmp_path)
    one_line_error(excinfo, "cut.png")


# --------------------------------------------------------------------------- argument errors


def test_name_root_and_split_errors(tmp_path: Path) -> None:
    cases = [
        (
            lambda: load_dataset("imagenet"),
            ["'imagenet'", "fashion_mnist", "cifar10", "image_folder", "mnist"],
        ),
        (lambda: load_dataset("mnist"), ["root=None", "root=<directory>"]),
        (
            lambda: load_dataset("mnist", tmp_path / "nope"),
            [str(tmp_path / "nope"), "not an existing directory"],
        ),
        (lambda: load_dataset("mnist", tmp_path, split="val"), ["'val'", "'train' or 'test'"]),
        (lambda: load_dataset("cifar10", tmp_path, download=True), ["download=True", "mnist"]),
        (lambda: load_dataset("mnist", tmp_path, image_size=8), ["image_size", "image_folder"]),
    ]
    for call, needles in cases:
        with pytest.raises(DataError) as excinfo:
            call()
        one_line_error(excinfo, *needles)
    assert issubclass(DataError, ValueError)


# --------------------------------------------------------------------------- split / prepare / stats


def test_split_train_minival() -> None:
    ds = synthetic(100)
    train, minival = split_train_minival(ds, 20, seed=0)
    assert (len(train), len(minival)) == (80, 20)
    assert decoded_index(train) | decoded_index(minival) == set(range(100))
    assert not decoded_index(train) & decoded_index(minival)
    again_train, again_minival = split_train_minival(ds, 20, seed=0)
    assert torch.equal(again_minival.images, minival.images) and torch.equal(again_train.labels, train.labels)
    assert decoded_index(split_train_minival(ds, 20, seed=1)[1]) != decoded_index(minival)
    assert len(split_train_minival(ds, 0.25, seed=0)[1]) == 25
    for bad in (0, -1, 100, 0.0, 1.0, 1.5, True, "10"):
        with pytest.raises(DataError) as excinfo:
            split_train_minival(ds, bad, seed=0)  # type: ignore[arg-type]
        one_line_error(excinfo, "minival_size")


def test_prepare_resizes_once_and_stays_uint8() -> None:
    small = ImageDataset(
        torch.full((5, 1, 28, 28), 77, dtype=torch.uint8), torch.arange(5) % 2, ("a", "b"), "s"
    )
    up = prepare(small, 32)
    assert up.images.shape == (5, 1, 32, 32) and up.images.dtype == torch.uint8
    assert bool((up.images == 77).all()) and torch.equal(up.labels, small.labels)
    big = synthetic(6, channels=3, size=96)
    down = prepare(big, 32)
    assert down.images.shape == (6, 3, 32, 32) and down.images.dtype == torch.uint8
    # Antialiased 3x downscaling averages 3x3 areas of the random source (plain bilinear would not).
    assert down.images.float().std() < 0.6 * big.images.float().std()
    assert prepare(down, 32) is down
    for bad in (31, 16, 32.0, True):
        with pytest.raises(DataError) as excinfo:
            prepare(big, bad)  # type: ignore[arg-type]
        one_line_error(excinfo, "resolution", ">= 32")


def test_channel_stats() -> None:
    images = torch.zeros((4, 2, 32, 32), dtype=torch.uint8)
    images[:2, 0] = 255  # channel 0: half 255, half 0 -> mean 0.5, std 0.5
    images[:, 1] = 51  # channel 1: constant 0.2 -> std floored at one grey level
    ds = ImageDataset(images, torch.tensor([0, 1, 0, 1]), ("a", "b"), "s")
    mean, std = channel_stats(ds)
    assert mean == pytest.approx((0.5, 0.2)) and std == pytest.approx((0.5, 1 / 255))


# --------------------------------------------------------------------------- batching


def test_batches_shapes_normalisation_and_layout() -> None:
    ds = synthetic(50, channels=3, size=32)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.2)
    batches = Batches(ds, 16, mean, std)
    assert len(batches) == 4 and len(Batches(ds, 16, mean, std, drop_last=True)) == 3
    out = list(batches)
    assert [len(y) for _, y in out] == [16, 16, 16, 2]
    x, y = out[0]
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    expected = (ds.images[:16].float() / 255 - mean_t) / std_t
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, ds.labels[:16])
    x_plain, _ = next(iter(Batches(ds, 16, mean, std, channels_last=False)))
    assert x_plain.is_contiguous() and torch.equal(x_plain, x)
    x_aug, _ = next(iter(Batches(ds, 16, mean, std, augment=True)))
    assert x_aug.shape == (16, 3, 32, 32) and x_aug.is_contiguous(memory_format=torch.channels_last)


def test_batches_shuffle_is_seeded_and_reshuffles_each_epoch() -> None:
    ds = synthetic(64, channels=1, size=32)
    batches = Batches(ds, 10, (0.5,), (0.5,), shuffle=True, seed=5)

    def epoch(b: Batches) -> list[int]:
        return torch.cat([x[:, 0, 0, 0] for x, _ in b]).tolist()

    first, second = epoch(batches), epoch(batches)
    assert sorted(first) == sorted(second) and first != second  # every image once, new order
    again = Batches(ds, 10, (0.5,), (0.5,), shuffle=True, seed=5)
    assert epoch(again) == first and epoch(again) == second
    assert epoch(Batches(ds, 10, (0.5,), (0.5,), shuffle=True, seed=6)) != first


def test_augmentation_crops_and_flips() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8, generator=g)
    ds = ImageDataset(images, torch.zeros(40, dtype=torch.int64), ("a", "b"), "s")
    identity = ((0.0,), (1 / 255,))  # x == raw pixel values
    flips = Batches(ds, 40, *identity, augment=True, pad=0, flip=True, seed=1)
    x, _ = next(iter(flips))
    mirrored = [torch.equal(x[i], images[i].float().flip(-1)) for i in range(40)]
    kept = [torch.equal(x[i], images[i].float()) for i in range(40)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    # With padding, each output is the image shifted by at most pad pixels with zeros filled in.
    white = ImageDataset(torch.full((40, 1, 32, 32), 255, dtype=torch.uint8), ds.labels, ds.classes, "w")
    crops, _ = next(iter(Batches(white, 40, *identity, augment=True, flip=False, seed=2)))
    assert crops.shape == (40, 1, 32, 32)
    zero_rows = (crops[:, 0] == 0).all(dim=2).sum(dim=1)
    zero_cols = (crops[:, 0] == 0).all(dim=1).sum(dim=1)
    assert int(zero_rows.max()) <= 4 and int(zero_cols.max()) <= 4 and int((zero_rows + zero_cols).sum()) > 0
    assert bool(((crops == 0) | (crops == 255)).all())


def test_batches_argument_errors() -> None:
    ds = synthetic(10, channels=3)
    cases = [
        (lambda: Batches(ds, 0, (0,) * 3, (1,) * 3), ["batch_size", "positive"]),
        (lambda: Batches(ds, 4, (0,), (1,)), ["3 value(s)"]),
        (lambda: Batches(ds, 4, (0,) * 3, (1, 0, 1)), ["std", "> 0"]),
        (lambda: Batches(ds, 11, (0,) * 3, (1,) * 3, drop_last=True), ["no batch of size 11"]),
    ]
    for call, needles in cases:
        with pytest.raises(DataError) as excinfo:
            call()
        one_line_error(excinfo, *needles)


@pytest.mark.usefixtures("one_thread")
def test_an_epoch_yields_every_image_once_in_a_new_order() -> None:
    """(Speed is bench/trainer.py's claim, measured against a plain loop side by side: a timed
    test here failed whenever the shared cores were busy.)"""
    ds = synthetic(10_000, channels=3, size=32)
    batches = Batches(ds, 128, (0.5,) * 3, (0.25,) * 3, shuffle=True, augment=True)
    orders = []
    for _ in range(2):
        labels = torch.cat([y for _, y in batches])
        assert len(labels) == 10_000 and sorted(labels.tolist()) == sorted(ds.labels.tolist())
        orders.append(labels)
    assert not torch.equal(orders[0], orders[1])
