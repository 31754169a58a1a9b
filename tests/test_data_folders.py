"""Folder datasets: layout discovery (WildRF, ForenSynths, real/fake names), labels, loaders over mixed sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ladeda.data.check import analyze_dataset
from ladeda.data.decoded import DecodedImages
from ladeda.data.folders import LabeledImages, discover, find_images, scan_split, subsets
from ladeda.data.images import load_rgb
from ladeda.data.loaders import make_loader
from ladeda.data.transforms import build_transform
from ladeda.core.errors import LadedaError


def _img(path: Path, size=(16, 16), value=0, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


def _tree(root: Path, files: dict[str, int]):
    """Create `relpath -> pixel value` images (value doubles as an identity to check labels by content)."""
    for rel, value in files.items():
        _img(root / rel, value=value)


def test_wildrf_layout_with_test_subsets(tmp_path):
    files = {"train/0_real/b.png": 10, "train/1_fake/a.png": 200, "train/0_real/a.png": 11,
             "val/1_fake/x.jpg": 201, "val/0_real/y.jpg": 12}
    for i, sub in enumerate(("reddit", "twitter", "facebook")):
        files[f"test/{sub}/0_real/{i}.jpg"] = 20 + i
        files[f"test/{sub}/1_fake/{i}.jpg"] = 220 + i
    _tree(tmp_path, files)
    train = discover(tmp_path, "train")
    assert [(Path(s.path).relative_to(tmp_path).as_posix(), s.label) for s in train] == [
        ("train/0_real/a.png", 0), ("train/0_real/b.png", 0), ("train/1_fake/a.png", 1)]
    assert {s.subset for s in train} == {""} and {s.split for s in train} == {"train"}
    test = discover(tmp_path, "test")
    assert subsets(test) == ["facebook", "reddit", "twitter"]
    for s in test:  # label follows the folder: fakes were written with values >= 200
        value = np.asarray(Image.open(s.path))[0, 0, 0]
        assert s.label == int(value >= 200)
        assert s.subset == Path(s.path).parent.parent.name


def test_forensynths_layout_nested_subsets_and_real_fake_names(tmp_path):
    _tree(tmp_path, {
        "train/car/0_real/1.png": 1, "train/car/1_fake/1.png": 201,
        "test/progan/airplane/0_real/1.png": 2, "test/progan/airplane/1_fake/1.png": 202,
        "test/stylegan/car/Real/1.png": 3, "test/stylegan/car/FAKE/1.png": 203,
        "test/biggan/fake/9.png": 204, "test/biggan/real/9.png": 4,
    })
    test = discover(tmp_path, "test")
    assert subsets(test) == ["biggan", "progan/airplane", "stylegan/car"]
    assert sorted((s.subset, s.label) for s in test) == [
        ("biggan", 0), ("biggan", 1), ("progan/airplane", 0), ("progan/airplane", 1),
        ("stylegan/car", 0), ("stylegan/car", 1)]
    assert {s.subset for s in discover(tmp_path, "train")} == {"car"}


def test_labels_do_not_depend_on_creation_order(tmp_path):
    names = [f"{i:02d}.png" for i in range(8)]
    rng = np.random.default_rng(0)
    for i in rng.permutation(16):  # interleave creation of real and fake files at random
        cls = "1_fake" if i % 2 else "0_real"
        _img(tmp_path / "val" / cls / names[i // 2], value=255 if i % 2 else 0)
    samples = discover(tmp_path, "val")
    assert [s.path for s in samples] == sorted(s.path for s in samples)
    assert all(s.label == int(np.asarray(Image.open(s.path)).max() == 255) for s in samples)
    assert sum(s.label for s in samples) == 8


def test_skipped_files_are_counted_not_used(tmp_path):
    _tree(tmp_path, {"train/0_real/a.png": 1, "train/1_fake/b.PNG": 2, "train/loose.png": 3})
    (tmp_path / "train/0_real/notes.txt").write_text("x")
    (tmp_path / "train/0_real/.DS_Store").write_text("x")
    scan = scan_split(tmp_path, "train")
    assert len(scan.samples) == 2 and len(scan.non_image) == 1 and len(scan.unlabelled) == 1
    assert scan.skipped == 2 and "skipped 1 non-image file, 1 outside a class folder" in scan.summary()
    assert scan.summary().startswith("train: 2 images (1 real, 1 fake)")
    excl = scan_split(tmp_path, "train", exclude=["train/1_fake/b.PNG"])
    assert [Path(s.path).name for s in excl.samples] == ["a.png"] and len(excl.excluded) == 1
    assert excl.summary().startswith("train: 1 image (1 real, 0 fake)") and "1 excluded" in excl.summary()


def _rel(samples, root: Path) -> list[str]:
    return [Path(s.path).relative_to(root).as_posix() for s in samples]


def test_symlink_loops_are_walked_once(tmp_path):
    """A folder link back to its own folder or to the split (a loop) is not descended again: each image once."""
    _tree(tmp_path, {"train/0_real/a.png": 1, "train/1_fake/b.png": 2})
    (tmp_path / "train/0_real/again").symlink_to(".")
    (tmp_path / "train/1_fake/up").symlink_to("..")
    scan = scan_split(tmp_path, "train")
    assert _rel(scan.samples, tmp_path) == ["train/0_real/a.png", "train/1_fake/b.png"] and not scan.skipped


def test_linked_folders_are_listed_once_by_loaders_and_check(tmp_path):
    """A link to a sibling folder adds nothing (its files keep their own paths); a link leading out of the tree
    is followed once; the loaders, the data check and predict's folder input see the same listing."""
    root = tmp_path / "data"
    _tree(root, {"test/reddit/0_real/a.png": 1, "test/reddit/1_fake/b.png": 2})
    _tree(tmp_path / "elsewhere", {"0_real/c.png": 3, "1_fake/d.png": 4})
    (root / "test/mirror").symlink_to("reddit")  # sorts before reddit: the link must not win
    (root / "test/twitter").symlink_to(tmp_path / "elsewhere")
    (root / "test/twitter2").symlink_to(tmp_path / "elsewhere")
    expected = ["test/reddit/0_real/a.png", "test/reddit/1_fake/b.png",
                "test/twitter/0_real/c.png", "test/twitter/1_fake/d.png"]
    ds = LabeledImages.from_split(root, "test", build_transform("test", 16))
    assert _rel(ds.samples, root) == expected and [s.subset for s in ds.samples] == ["reddit"] * 2 + ["twitter"] * 2
    report = analyze_dataset(root, splits=["test"], progress=False)
    assert report["splits"]["test"]["images"] == 4
    assert report["splits"]["test"]["subsets"].keys() == {"reddit", "twitter"}
    files, _ = find_images([root / "test", root / "test/mirror"])
    assert sorted(f.relative_to(root).as_posix() for f in files) == expected


def test_glob_over_a_looped_tree_lists_each_image_once(tmp_path):
    """`**` does not run around a link loop (glob.glob does, to the OS's link limit): 16 images stay 16, and the
    glob keeps its meaning (any depth, names matched per folder, hidden and non-image files left out)."""
    names = [f"{i:02d}.png" for i in range(16)]
    for name in names:
        _img(tmp_path / "imgs/sub" / name)
    (tmp_path / "imgs/sub/loop").symlink_to("..")
    _img(tmp_path / "imgs/top.png")
    _img(tmp_path / "imgs/.cache/hidden.png")
    (tmp_path / "imgs/sub/notes.txt").write_text("x")
    files, root = find_images(str(tmp_path / "imgs/**/*.png"))
    assert files == [tmp_path / "imgs/sub" / n for n in names] + [tmp_path / "imgs/top.png"]
    assert root == tmp_path / "imgs"
    files, _ = find_images(str(tmp_path / "imgs/*/0?.png"))
    assert files == [tmp_path / "imgs/sub" / n for n in names[:10]]
    assert len(find_images(tmp_path / "imgs")[0]) == 17


def test_missing_split_and_bad_layout_are_clear_errors(tmp_path):
    with pytest.raises(LadedaError, match="split folder not found"):
        discover(tmp_path, "train")
    _tree(tmp_path, {"train/cats/a.png": 1})
    with pytest.raises(LadedaError, match="no labelled images"):
        discover(tmp_path, "train")
    _tree(tmp_path, {"val/0_real/1_fake/a.png": 1})
    with pytest.raises(LadedaError, match="class folder inside another"):
        discover(tmp_path, "val")


def test_dataset_items_and_corrupt_file_error(tmp_path):
    _tree(tmp_path, {"val/0_real/a.png": 0, "val/1_fake/b.png": 255})
    (tmp_path / "val/1_fake/c.png").write_bytes(b"broken")
    ds = LabeledImages.from_split(tmp_path, "val", build_transform("val", 16))
    x, y, i = ds[0]
    assert x.shape == (3, 16, 16) and y == 0 and i == 0 and ds.labels == [0, 1, 1]
    with pytest.raises(LadedaError, match="c.png"):
        ds[2]


def test_loader_buckets_mixed_sizes_and_is_deterministic(tmp_path):
    sizes = [(16, 16), (20, 12), (16, 16), (21, 13), (20, 12), (16, 16), (17, 17)]  # 21x13 -> 20x12, 17 -> 16
    for k, size in enumerate(sizes):
        _img(tmp_path / "test" / ("1_fake" if k % 2 else "0_real") / f"{k}.png", size=size, value=k)
    ds = LabeledImages.from_split(tmp_path, "test", build_transform("test", 16))

    def run(seed):
        return [(tuple(x.shape), idx.tolist()) for x, _, idx in make_loader(ds, 2, shuffle=True, seed=seed)]

    batches = run(0)
    seen = sorted(i for _, idx in batches for i in idx)
    assert seen == list(range(len(sizes)))  # every image exactly once, none dropped
    assert {shape[2:] for shape, _ in batches} == {(16, 16), (12, 20)}
    assert run(0) == batches  # same seed, same order
    assert any(run(s) != batches for s in range(1, 6))
    ordered = [idx.tolist() for _, _, idx in make_loader(ds, 3, shuffle=False)]
    assert sorted(i for b in ordered for i in b) == list(range(len(sizes)))


def test_fixed_size_loader_is_plain_and_seeded(tmp_path):
    for k in range(6):
        _img(tmp_path / "train" / ("1_fake" if k % 2 else "0_real") / f"{k}.png", size=(24, 20 + k), value=k)
    ds = LabeledImages.from_split(tmp_path, "train", build_transform("train", 16))

    def run():
        torch.manual_seed(0)
        return [(x.clone(), idx.tolist()) for x, _, idx in make_loader(ds, 4, shuffle=True, seed=1)]

    a, b = run(), run()
    assert [i for _, i in a] == [i for _, i in b] and all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))
    assert sum(len(i) for _, i in a) == 6


def _noise_tree(root: Path, split: str, sizes: list[tuple[int, int]]):
    """Images of random pixels, alternating real / fake, of the given (width, height)."""
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate(sizes):
        path = root / split / ("1_fake" if k % 2 else "0_real") / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def test_decoded_pixels_are_kept_between_passes_and_give_the_same_items(tmp_path):
    _noise_tree(tmp_path, "train", [(16, 16)] * 3)
    transform = build_transform("train", 12)
    plain = LabeledImages.from_split(tmp_path, "train", transform)
    decoded = DecodedImages()
    cached = LabeledImages.from_split(tmp_path, "train", transform, decoded=decoded)
    for _ in range(2):  # the first pass decodes, the second reads the kept pixels
        for i in range(3):
            for seed in (0, 1):  # the random crop and flip of an item's own seed
                assert torch.equal(cached[(i, seed)][0], plain[(i, seed)][0])
    assert len(decoded.kept) == 3 and decoded.kept_bytes == 3 * 16 * 16 * 3
    path = plain.samples[0].path
    assert torch.equal(decoded.get(path), torch.from_numpy(np.array(load_rgb(path))).permute(2, 0, 1))


def test_decoded_pixels_beyond_the_budget_are_decoded_each_time(tmp_path):
    _noise_tree(tmp_path, "val", [(16, 16)] * 3)
    decoded = DecodedImages(max_bytes=16 * 16 * 3)
    ds = LabeledImages.from_split(tmp_path, "val", build_transform("val", 16), decoded=decoded)
    first = [ds[i][0] for i in range(3)]
    assert len(decoded.kept) == 1
    assert all(torch.equal(a, ds[i][0]) for i, a in enumerate(first))


@pytest.mark.parametrize("sizes, mode, crop, options, repeats", [
    ([(16, 16)] * 3, "train", 16, {}, True),  # the crop takes the whole image: only the flip is random
    ([(16, 16)] * 3, "train", 12, {}, False),  # a random 12-px window of 16
    ([(16, 16), (20, 16)], "train", 16, {}, False),  # one image is wider than the crop
    ([(16, 16), (20, 16)], "train", 12, {"load_size": 12}, True),  # resized to the crop first
    ([(16, 16)] * 3, "train", 16, {"blur_prob": 0.5}, False),
    ([(16, 16)] * 3, "train", 16, {"jpeg_prob": 0.5}, False),
    ([(16, 16), (20, 16)], "val", 12, {}, True),  # centre crop: the same tensor every time
])
def test_inputs_repeat_only_when_nothing_but_the_flip_is_random(tmp_path, sizes, mode, crop, options, repeats):
    split = "train" if mode == "train" else "val"
    _noise_tree(tmp_path, split, sizes)
    ds = LabeledImages.from_split(tmp_path, split, build_transform(mode, crop, **options))
    assert ds.inputs_repeat() is repeats
    if repeats:  # what it promises: at most two tensors per image over many passes
        for i in range(len(sizes)):
            assert len({ds[(i, seed)][0].numpy().tobytes() for seed in range(8)}) <= 2


def test_scanning_and_checking_folders_do_not_import_torchvision():
    """torchvision takes about a second to import: the data check and folder scanning (the check_data and
    prepare_data stages) never need it; only decoding for a transform does."""
    code = ("import sys, ladeda.data.check, ladeda.data.folders, ladeda.data.decoded; "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
