"""A first day with your own data: missing files name the fixes; a plain image folder (torchvision's
``root/<class>/<images>``) works for the searches; decoding is bounded, checked against the available
memory up front and shows progress. Real PNG/JPEG files written with PIL, real IDX/CIFAR folders."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effnas import data
from effnas.data import DataError, MissingData, load_dataset, load_splits, split_train_minival
from effnas.data import core, registry
from effnas.data.sources import folder
from effnas.task import load_data
from effnas.train import ProxyConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
FIXES = ("dataset.root=<folder>", "root=")



def one_line(excinfo: pytest.ExceptionInfo[BaseException], *needles: str, absent: tuple[str, ...] = ()) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    for needle in absent:
        assert needle not in message, f"{needle!r} in {message!r}"
    return message


def write_folder(root: Path, classes: int = 2, per_class: int = 10, size: tuple[int, int] = (40, 40),
                 fmt: str = "png", mode: str = "RGB", seed: int = 0) -> list[Path]:
    """``root/<class>/<n>.<fmt>`` with distinct random images; returns the files in load order."""
    rng = np.random.default_rng(seed)
    files = []
    for c in range(classes):
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            path = root / f"class{c}" / f"{i:03d}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
            files.append(path)
    return files


def proxy(**overrides: object) -> ProxyConfig:
    return dataclasses.replace(ProxyConfig(), threads=1, device="cpu", **overrides)


@pytest.fixture()
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, tuple[int, int]]]:
    """Every _decode_images call of the folder source: (label, image count, size)."""
    calls: list[tuple[str, int, tuple[int, int]]] = []
    real = folder._decode_images

    def spy(files, mode, size, label="image_folder"):
        calls.append((label, len(files), size))
        return real(files, mode, size, label)

    monkeypatch.setattr(folder, "_decode_images", spy)
    return calls


# --------------------------------------------------------------------------- missing data names the fixes


def test_missing_default_root_names_the_package_root_and_download(tmp_path: Path, monkeypatch) -> None:
    source = data.get_source("fashion_mnist")
    assert source.debian_package == "dataset-fashion-mnist"
    monkeypatch.setitem(registry.SOURCES, "fashion_mnist", dataclasses.replace(source, default_root=tmp_path / "nope"))
    with pytest.raises(MissingData) as excinfo:
        load_dataset("fashion_mnist")
    one_line(excinfo, f"root {tmp_path / 'nope'} is not an existing directory",
             "apt-get install dataset-fashion-mnist", *FIXES, "dataset.download=true")
    # The default root exists but holds no files (e.g. an emptied package folder): the same fixes.
    (tmp_path / "nope").mkdir()
    with pytest.raises(MissingData) as excinfo:
        load_splits("fashion_mnist", train_size=10, minival_size=10)
    one_line(excinfo, "train-images-idx3-ubyte[.gz] not found", "apt-get install dataset-fashion-mnist",
             *FIXES, "dataset.download=true")
    assert issubclass(MissingData, DataError) and issubclass(MissingData, ValueError)


def test_missing_given_root_names_root_and_download_only(tmp_path: Path) -> None:
    # An explicit root: installing the package would not help, so it is not offered.
    with pytest.raises(MissingData) as excinfo:
        load_dataset("fashion_mnist", tmp_path / "nope")
    one_line(excinfo, "not an existing directory", *FIXES, "dataset.download=true", absent=("apt-get",))
    with pytest.raises(MissingData) as excinfo:
        load_dataset("mnist", tmp_path)  # an empty folder
    one_line(excinfo, "not found in", *FIXES, "dataset.download=true", absent=("apt-get",))
    # Sources that cannot download do not offer it.
    with pytest.raises(MissingData) as excinfo:
        load_dataset("cifar10", tmp_path)
    one_line(excinfo, "data_batch_1", *FIXES, absent=("apt-get", "download"))
    with pytest.raises(MissingData) as excinfo:
        load_dataset("image_folder", tmp_path)
    one_line(excinfo, "0 class folder(s)", *FIXES, absent=("apt-get", "download"))


def test_nas_search_on_a_fresh_machine_names_the_fixes(tmp_path: Path, monkeypatch, capsys) -> None:
    """The CLI line a fresh machine prints: one `error:` line with the three fixes, exit 2."""
    from effnas.cli import run_app
    from nas.cli import search_task

    source = data.get_source("fashion_mnist")
    monkeypatch.setitem(registry.SOURCES, "fashion_mnist", dataclasses.replace(source, default_root=tmp_path / "nope"))
    monkeypatch.chdir(tmp_path)
    code = run_app("nas_search", search_task, [f"results_dir={tmp_path / 'results'}", "proxy.threads=1", "rerank=none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: fashion_mnist: root ") and "apt-get install dataset-fashion-mnist" in err[0]
    assert "dataset.root=<folder>" in err[0] and "dataset.download=true" in err[0]


def test_unknown_keyword_options_are_data_errors(tmp_path: Path) -> None:
    write_folder(tmp_path, per_class=3, size=(32, 32))
    cases = [
        (lambda: load_splits("image_folder", tmp_path, split="train"), ["split", "load_dataset"]),
        (lambda: load_splits("image_folder", tmp_path, minival_size=2, colour=True), ["colour", "image_size"]),
        (lambda: load_dataset("image_folder", tmp_path, colour=True), ["colour"]),
        (lambda: load_splits("image_folder", tmp_path, minival_size=2, test="maybe"), ["test=", "if_present"]),
        (lambda: load_data({"name": "image_folder", "root": str(tmp_path), "split": "train"},
                           proxy(minival_size=2, train_size=None), 0), ["split"]),
    ]
    for call, needles in cases:
        with pytest.raises(DataError) as excinfo:
            call()
        one_line(excinfo, *needles)


# --------------------------------------------------------------------------- a plain image folder


def test_search_loads_a_flat_folder_without_a_test_split(tmp_path: Path, decoded) -> None:
    write_folder(tmp_path, classes=3, per_class=8, size=(48, 40))
    splits = load_data({"name": "image_folder", "root": str(tmp_path)}, proxy(train_size=10, minival_size=6), 0)
    assert splits.test is None
    assert (len(splits.train), len(splits.minival), splits.num_classes, splits.in_channels) == (10, 6, 3, 3)
    assert splits.train.images.shape[1:] == (3, 32, 32) and splits.minival.images.shape[1:] == (3, 32, 32)
    # Only the 16 images used were decoded, in one pass, straight at the proxy resolution.
    assert decoded == [("image_folder (train)", 16, (32, 32))]


def test_search_never_decodes_an_existing_test_split(tmp_path: Path, decoded) -> None:
    write_folder(tmp_path / "train", per_class=6, size=(32, 32))
    write_folder(tmp_path / "test", per_class=2, size=(32, 32), seed=1)
    splits = load_data({"name": "image_folder", "root": str(tmp_path)}, proxy(train_size=None, minival_size=4), 0)
    assert splits.test is None and len(splits.train) == 8
    assert [label for label, _, _ in decoded] == ["image_folder (train)"]
    # nas-train asks for the test split where there is one.
    decoded.clear()
    full = load_data({"name": "image_folder", "root": str(tmp_path)}, proxy(train_size=None, minival_size=4), 0,
                     test="if_present")
    assert full.test is not None and len(full.test) == 4 and full.test.images.shape[1:] == (3, 32, 32)
    assert [label for label, _, _ in decoded] == ["image_folder (train)", "image_folder (test)"]


def test_train_style_loading_of_a_flat_folder_has_no_test_split(tmp_path: Path) -> None:
    write_folder(tmp_path, per_class=5, size=(32, 32))
    splits = load_data({"name": "image_folder", "root": str(tmp_path)}, proxy(train_size=None, minival_size=4), 0,
                       test="if_present")
    assert splits.test is None and (len(splits.train), len(splits.minival)) == (6, 4)
    with pytest.raises(DataError) as excinfo:  # asking for a test split outright still says why there is none
        load_data({"name": "image_folder", "root": str(tmp_path)}, proxy(minival_size=4), 0, test=True)
    one_line(excinfo, "no train/ and test/")


def test_selected_decoding_matches_splitting_the_whole_folder(tmp_path: Path) -> None:
    """Decoding only the chosen images gives the very images (and order) of decoding all and splitting."""
    write_folder(tmp_path, classes=3, per_class=9, size=(32, 32))
    splits = load_splits("image_folder", tmp_path, resolution=32, minival_size=7, train_size=11, seed=5, test=False)
    everything = load_dataset("image_folder", tmp_path)
    train, minival = split_train_minival(everything, 7, seed=5)
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(5))[:11].sort().values
    train = train.subset(keep)
    assert torch.equal(splits.minival.images, minival.images) and torch.equal(splits.minival.labels, minival.labels)
    assert torch.equal(splits.train.images, train.images) and torch.equal(splits.train.labels, train.labels)


def test_large_images_are_decoded_near_the_target_size(tmp_path: Path, decoded) -> None:
    colour = np.zeros((600, 800, 3), dtype=np.uint8)
    colour[...] = (200, 40, 90)
    for c in ("a", "b"):
        for i in range(3):
            (tmp_path / c).mkdir(exist_ok=True)
            Image.fromarray(colour).save(tmp_path / c / f"{i}.jpg", quality=95)
    # JPEG DCT scaling: an 800x600 photo wanted at 32 px is decoded at 1/8 (100x75), never at full size.
    with folder._open_image(tmp_path / "a" / "0.jpg", decode=True, draft=("RGB", (32, 32))) as image:
        assert image.size == (100, 75)
    splits = load_splits("image_folder", tmp_path, resolution=32, minival_size=2, test=False)
    assert decoded == [("image_folder (train)", 6, (32, 32))]
    assert splits.train.images.shape == (4, 3, 32, 32)
    assert (splits.train.images.float().mean(dim=(0, 2, 3)) - torch.tensor([200.0, 40, 90])).abs().max() < 4
    # image_size still decodes at that size first (then prepare resizes).
    decoded.clear()
    sized = load_splits("image_folder", tmp_path, resolution=32, minival_size=2, test=False, image_size=64)
    assert decoded == [("image_folder (train)", 6, (64, 64))] and sized.train.images.shape == (4, 3, 32, 32)


# --------------------------------------------------------------------------- memory and progress


def test_memory_refusal_names_the_estimate_and_the_knobs(tmp_path: Path, monkeypatch, decoded) -> None:
    write_folder(tmp_path, classes=2, per_class=10, size=(40, 40))
    monkeypatch.setattr(core, "available_memory", lambda: 50_000)
    with pytest.raises(DataError) as excinfo:
        load_data({"name": "image_folder", "root": str(tmp_path)}, proxy(train_size=12, minival_size=5), 0)
    # 17 images x 3 x 32 x 32 bytes resident + one 40x40 image decoded natively (2 copies x 4 bytes a pixel)
    need = 17 * 3 * 32 * 32 + 2 * 4 * 40 * 40
    assert need == 65_024
    one_line(excinfo, "image_folder: decoding 12 train + 5 minival images at 3x32x32", "65.0 KB", "50.0 KB",
             "proxy.train_size (now 12)", "proxy.resolution (now 32)", "dataset.image_size")
    assert decoded == []  # refused before anything was decoded
    # Decoding at a larger image_size first costs that size plus the resized copy and the float chunk.
    with pytest.raises(DataError) as excinfo:
        load_splits("image_folder", tmp_path, resolution=32, minival_size=5, train_size=12, test=False, image_size=64)
    # per split: decoded at 64 px + resized to 32 px + prepare's float32 chunk (here the whole split)
    need = sum(n * 3 * (64 * 64 + 32 * 32) * (1 + 4) for n in (12, 5)) + 2 * 4 * 40 * 40
    one_line(excinfo, "at 3x64x64, resized to 32x32", core.format_bytes(need), "dataset.image_size (now 64)")
    # Loading one split directly is checked too.
    with pytest.raises(DataError) as excinfo:
        load_dataset("image_folder", tmp_path)
    one_line(excinfo, "decoding 20 train images at 3x40x40", "image_size")
    assert decoded == []


def test_progress_lines_while_decoding(tmp_path: Path, monkeypatch, caplog) -> None:
    write_folder(tmp_path, classes=2, per_class=3, size=(32, 32))
    monkeypatch.setattr(folder, "PROGRESS_INTERVAL", 0.0)
    with caplog.at_level(logging.INFO, logger="effnas"):
        load_dataset("image_folder", tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "effnas"]
    assert lines[0].startswith("decoding image_folder (train): 1/6 images (16%), ETA ")
    assert lines[4].startswith("decoding image_folder (train): 5/6 images (83%), ETA ")
    assert lines[-1].startswith("decoding image_folder (train): 6 images in ") and len(lines) == 6
    caplog.clear()
    monkeypatch.setattr(folder, "PROGRESS_INTERVAL", 3600.0)  # fast decodes stay quiet
    with caplog.at_level(logging.INFO, logger="effnas"):
        load_dataset("image_folder", tmp_path)
    assert not [r for r in caplog.records if r.name == "effnas"]


def test_duration_format() -> None:
    assert [folder._duration(s) for s in (0.4, 59, 70, 3599, 3725)] == ["0s", "59s", "1m10s", "59m59s", "1h02m"]


def test_available_memory_is_a_positive_byte_count() -> None:
    available = data.available_memory()
    assert available is None or available > 0
