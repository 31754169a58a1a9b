"""The embedded default dataset: real crops of photos shipped inside installed wheels, fakes from seeded decoders.

Two domains in the folder layout of `ladeda.data.folders`:
- `source/{train,val,test}/{0_real,1_fake}/*.png`: one generator family (transposed conv), light JPEG
  (quality 85-100 on half of the images, real and fake alike; it steadies the transfer) saved as PNG;
  it pretrains the teacher.
- `target/{train,val}/{0_real,1_fake}/*.jpg` and `target/test/{family}/{0_real,1_fake}/*.jpg`: the other
  families (nearest, bilinear; signed, more irregular kernels and more texture than the source) plus
  social-media processing (resize down and up, light blur, JPEG quality 60-95, sometimes twice) applied to
  real and fake alike; it stands for the user's data.
The recipes (`RECIPES`) are calibrated so that a teacher pretrained on the source scores a mediocre AUC on
the target and fine-tuning on the target lifts it clearly above; the measured numbers are in the README.
Photos are split by photo between the domains and by disjoint tiles between train/val/test, so no pixel of
a photo is in two splits. `manifest.json` records, for every file, the photo region it came from and how
it was made. Everything follows from the seed.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from ladeda.data.folders import SPLITS
from ladeda.embedded.generators import Decoder, family_seed
from ladeda.core.errors import LadedaError
from ladeda.core.files import write_json


# --------------------------------------------------------------------------------------------- photos

@dataclass(frozen=True)
class Photo:
    """A photograph shipped in an installed package: name, `package:relative/path`, greyscale or not."""

    name: str
    where: str
    grey: bool = False

    def path(self) -> Path:
        """The file inside the installed package (found without importing it; never downloaded data)."""
        package, rel = self.where.split(":", 1)
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise LadedaError(f"package {package!r} is not installed; it ships the sample photo {self.name!r}")
        return Path(list(spec.submodule_search_locations)[0]) / rel


PHOTOS = (
    Photo("astronaut", "skimage:data/astronaut.png"),
    Photo("coffee", "skimage:data/coffee.png"),
    Photo("chelsea", "skimage:data/chelsea.png"),
    Photo("rocket", "skimage:data/rocket.jpg"),
    Photo("motorcycle_left", "skimage:data/motorcycle_left.png"),
    Photo("china", "sklearn:datasets/images/china.jpg"),
    Photo("flower", "sklearn:datasets/images/flower.jpg"),
    Photo("grace_hopper", "matplotlib:mpl-data/sample_data/grace_hopper.jpg"),
    Photo("camera", "skimage:data/camera.png", grey=True),
    Photo("coins", "skimage:data/coins.png", grey=True),
    Photo("clock_motion", "skimage:data/clock_motion.png", grey=True),
    Photo("brick", "skimage:data/brick.png", grey=True),
    Photo("grass", "skimage:data/grass.png", grey=True),
    Photo("gravel", "skimage:data/gravel.png", grey=True),
)
# Split by photo (fixed, so both domains hold colour and greyscale, portraits, objects and textures).
DOMAIN_PHOTOS = {
    "source": ("astronaut", "coffee", "rocket", "china", "camera", "brick", "grass"),
    "target": ("chelsea", "motorcycle_left", "flower", "grace_hopper", "coins", "clock_motion", "gravel"),
}


def load_photo(photo: Photo) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a shipped photo (greyscale photos have R = G = B)."""
    path = photo.path()
    if not path.is_file():
        raise LadedaError(f"{path}: sample photo {photo.name!r} missing from its installed package; "
                          f"reinstall {photo.where.split(':')[0]}")
    with Image.open(path) as img:
        return np.asarray(img.convert("L" if photo.grey else "RGB").convert("RGB")).copy()


# --------------------------------------------------------------------------------------------- recipes

@dataclass(frozen=True)
class Recipe:
    """How one domain is made: generator families, their strength, and the processing of every image."""

    families: tuple[str, ...]
    instances: int = 4                     # random decoders per family
    signed: tuple[str, ...] = ()           # families whose post-upsampling 3x3 conv is signed, not smoothing
    jitter: float = 0.35                   # how far the decoders' upsampling kernels stray from smooth
    keep: tuple[float, float] = (0.3, 0.6)  # share of real detail kept (uniform per fake)
    texture: tuple[float, float] = (0.3, 0.6)  # texture amplitude relative to the detail removed
    file_format: str = "PNG"
    jpeg_prob: float = 0.0                 # one JPEG round trip with this probability ...
    jpeg_quality: tuple[int, int] = (85, 100)  # ... at a quality drawn from this range (inclusive)
    jpeg_twice_prob: float = 0.0           # a second JPEG compression (target only)
    resize_prob: float = 0.0               # resize down by a factor in resize_range, then back up
    resize_range: tuple[float, float] = (0.6, 0.9)
    blur_prob: float = 0.0
    blur_radius: tuple[float, float] = (0.3, 0.8)
    test_subsets: bool = False             # test/{family}/... instead of test/...


RECIPES = {
    "source": Recipe(families=("tconv",), keep=(0.1, 0.4), texture=(0.8, 1.2),
                     file_format="PNG", jpeg_prob=0.5, jpeg_quality=(85, 100)),
    "target": Recipe(families=("nearest", "bilinear"), keep=(0.0, 0.2), texture=(1.5, 2.0), jitter=0.7,
                     signed=("nearest", "bilinear"), file_format="JPEG", jpeg_quality=(60, 95),
                     jpeg_twice_prob=0.1, resize_prob=0.1, blur_prob=0.05, test_subsets=True),
}
MARGIN = 8  # context around a fake's crop so the decoders' zero padding never reaches the image


def tile_size(image_size: int) -> int:
    """Side of the square tiles photos are cut into: room for random crop positions and the fakes' margin."""
    return image_size + max(image_size // 2, 2 * MARGIN + 8)


# --------------------------------------------------------------------------------------------- regions

@dataclass(frozen=True)
class Tile:
    """A square photo region assigned to one split: [x0, x1) x [y0, y1)."""

    photo: str
    x0: int
    y0: int
    x1: int
    y1: int


def plan_tiles(sizes: Mapping[str, tuple[int, int]], counts: Mapping[str, int], image_size: int,
               rng: np.random.Generator) -> dict[str, list[Tile]]:
    """Cut each photo ((H, W) in `sizes`) into disjoint tiles and share them among splits, per photo.

    Each split gets tiles in proportion to its image count (at least one per photo when the photo has
    enough tiles), so every split sees every photo but no pixel is in two splits.
    """
    t = tile_size(image_size)
    total = sum(counts.values())
    out: dict[str, list[Tile]] = {s: [] for s in counts}
    for name in sorted(sizes):
        h, w = sizes[name]
        rows, cols = h // t, w // t
        if rows * cols < len(counts):
            raise LadedaError(f"prepare_data.image_size={image_size} is too large: photo {name!r} ({w}x{h}) "
                              f"holds fewer than {len(counts)} tiles of {t}px; use image_size <= 128")
        oy, ox = (h - rows * t) // 2, (w - cols * t) // 2
        tiles = [Tile(name, ox + c * t, oy + r * t, ox + (c + 1) * t, oy + (r + 1) * t)
                 for r in range(rows) for c in range(cols)]
        order = rng.permutation(len(tiles))
        # largest-remainder allocation, at least one tile per split
        want = {s: max(1.0, len(tiles) * n / total) for s, n in counts.items()}
        alloc = {s: int(v) for s, v in want.items()}
        for s in sorted(want, key=lambda s: want[s] - alloc[s], reverse=True):
            if sum(alloc.values()) >= len(tiles):
                break
            alloc[s] += 1
        while sum(alloc.values()) > len(tiles):  # rounding up the minimum may overshoot
            biggest = max(alloc, key=lambda s: alloc[s])
            alloc[biggest] -= 1
        start = 0
        for s in counts:
            out[s] += [tiles[i] for i in order[start:start + alloc[s]]]
            start += alloc[s]
    return out


def sample_boxes(tiles: list[Tile], n: int, size: int, rng: np.random.Generator) -> list[tuple[Tile, int, int]]:
    """n random (tile, x, y) crop origins of `size` x `size` boxes lying inside one of `tiles`."""
    picks = rng.integers(0, len(tiles), size=n)
    out = []
    for i in picks:
        tile = tiles[int(i)]
        x = int(rng.integers(tile.x0, tile.x1 - size + 1))
        y = int(rng.integers(tile.y0, tile.y1 - size + 1))
        out.append((tile, x, y))
    return out


# --------------------------------------------------------------------------------------------- processing

def jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    """Compress to JPEG in memory and decode again."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def process(img: Image.Image, recipe: Recipe, rng: np.random.Generator) -> tuple[bytes, dict]:
    """Apply the domain's processing to one image (real or fake alike) and encode the file's bytes."""
    size = img.size
    info: dict = {}
    if rng.random() < recipe.resize_prob:
        f = float(rng.uniform(*recipe.resize_range))
        small = (max(2, round(size[0] * f)), max(2, round(size[1] * f)))
        img = img.resize(small, Image.Resampling.BICUBIC).resize(size, Image.Resampling.BILINEAR)
        info["resize"] = round(f, 3)
    if rng.random() < recipe.blur_prob:
        r = float(rng.uniform(*recipe.blur_radius))
        img = img.filter(ImageFilter.GaussianBlur(r))
        info["blur"] = round(r, 3)
    lo, hi = recipe.jpeg_quality
    buf = io.BytesIO()
    if recipe.file_format == "JPEG":
        if rng.random() < recipe.jpeg_twice_prob:
            q = int(rng.integers(lo, hi + 1))
            img = jpeg_roundtrip(img, q)
            info["jpeg_first"] = q
        q = int(rng.integers(lo, hi + 1))
        img.save(buf, format="JPEG", quality=q)
        info["jpeg"] = q
    else:
        if rng.random() < recipe.jpeg_prob:
            q = int(rng.integers(lo, hi + 1))
            img = jpeg_roundtrip(img, q)
            info["jpeg"] = q
        img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue(), info


# --------------------------------------------------------------------------------------------- generation

def _split_subsets(recipe: Recipe, split: str, n: int) -> list[tuple[str, str | None, int]]:
    """(subset folder, family or None for a mix, images per class) for one split of a domain."""
    if split == "test" and recipe.test_subsets:
        k = len(recipe.families)
        return [(fam, fam, n // k + (1 if i < n % k else 0)) for i, fam in enumerate(recipe.families)]
    return [("", None, n)]


def generate_domain(out: Path, domain: str, counts: Mapping[str, int], image_size: int, seed: int,
                    photos: Mapping[str, np.ndarray], recipe: Recipe, progress: bool = True) -> list[dict]:
    """Write one domain under `out` and return its manifest rows (one per file)."""
    names = DOMAIN_PHOTOS[domain]
    grey = {p.name: p.grey for p in PHOTOS}
    dom_id = list(DOMAIN_PHOTOS).index(domain)
    rng = np.random.default_rng([seed, dom_id, 0])
    tiles = plan_tiles({n: photos[n].shape[:2] for n in names}, dict(counts), image_size, rng)
    decoders = {(fam, i): Decoder(fam, family_seed(seed, fam, i), jitter=recipe.jitter,
                                     signed=fam in recipe.signed)
                for fam in recipe.families for i in range(recipe.instances)}
    ext = ".jpg" if recipe.file_format == "JPEG" else ".png"
    rows: list[dict] = []
    s = image_size
    for split_id, split in enumerate(SPLITS):
        for sub_id, (subset, family, n) in enumerate(_split_subsets(recipe, split, counts[split])):
            srng = np.random.default_rng([seed, dom_id, 1 + split_id, sub_id])
            real_boxes = sample_boxes(tiles[split], n, s, srng)
            fake_boxes = sample_boxes(tiles[split], n, s + 2 * MARGIN, srng)
            fams = [family or recipe.families[i % len(recipe.families)] for i in range(n)]
            inst = srng.integers(0, recipe.instances, size=n)
            keep = srng.uniform(*recipe.keep, size=n)
            tex = srng.uniform(*recipe.texture, size=n) * np.sqrt(1 - keep**2)
            fakes = _synthesize(photos, fake_boxes, fams, inst, keep, tex, decoders, grey, s)
            folder = out / domain / split / subset if subset else out / domain / split
            for label, cls in ((0, "0_real"), (1, "1_fake")):
                (folder / cls).mkdir(parents=True, exist_ok=True)
                prng = np.random.default_rng([seed, dom_id, 1 + split_id, sub_id, 1 + label])
                desc = f"{domain}/{split}{'/' + subset if subset else ''}/{cls}"
                for i in tqdm(range(n), desc=desc, disable=not progress, leave=False):
                    tile, x, y = (real_boxes if label == 0 else fake_boxes)[i]
                    if label == 0:
                        img = Image.fromarray(photos[tile.photo][y:y + s, x:x + s])
                        box = [x, y, x + s, y + s]
                    else:
                        img = fakes[i]
                        box = [x, y, x + s + 2 * MARGIN, y + s + 2 * MARGIN]
                    data, info = process(img, recipe, prng)
                    rel = f"{domain}/{split}/{subset + '/' if subset else ''}{cls}/{i:05d}{ext}"
                    (out / rel).write_bytes(data)
                    row = {"path": rel, "label": label, "split": split, "subset": subset, "photo": tile.photo,
                           "box": box, "tile": [tile.x0, tile.y0, tile.x1, tile.y1], **info}
                    if label == 1:
                        row.update(family=fams[i], instance=int(inst[i]), keep=round(float(keep[i]), 3),
                                   texture=round(float(tex[i]), 3))
                    rows.append(row)
    return rows


def _synthesize(photos, boxes, fams, inst, keep, tex, decoders, grey, s, batch: int = 256) -> list[Image.Image]:
    """Run each fake's source crop (with margin) through its decoder; return the centre crops as images."""
    m = MARGIN
    crops = np.stack([photos[t.photo][y:y + s + 2 * m, x:x + s + 2 * m] for t, x, y in boxes])
    x_all = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255)
    out = torch.empty_like(x_all)
    keys = [(f, int(i)) for f, i in zip(fams, inst)]
    for key in sorted(set(keys)):
        idx = [j for j, k in enumerate(keys) if k == key]
        for b in range(0, len(idx), batch):
            sel = torch.tensor(idx[b:b + batch])
            out[sel] = decoders[key](x_all[sel], torch.from_numpy(keep[sel.numpy()]),
                                     torch.from_numpy(tex[sel.numpy()]))
    out = out[:, :, m:m + s, m:m + s]
    is_grey = torch.tensor([grey[t.photo] for t, _, _ in boxes])
    out[is_grey] = out[is_grey].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)  # grey photo -> grey fake
    pixels = out.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(p) for p in pixels]


def generate_default(out: str | os.PathLike, seed: int, image_size: int, source_counts: Mapping[str, int],
                     target_counts: Mapping[str, int], progress: bool = True,
                     recipes: Mapping[str, Recipe] | None = None) -> dict:
    """Build `{out}/source`, `{out}/target` and `{out}/manifest.json` atomically; return counts and timing.

    Written into a temporary folder beside `out` and renamed over it at the end, so an interrupted run
    never leaves a half-written dataset.
    """
    if image_size % 2 or image_size < 16:
        raise LadedaError(f"prepare_data.image_size must be an even number >= 16, got {image_size}")
    recipes = dict(RECIPES if recipes is None else recipes)
    counts = {"source": dict(source_counts), "target": dict(target_counts)}
    for domain, c in counts.items():
        for split in SPLITS:
            if c.get(split, 0) < 1:
                raise LadedaError(f"prepare_data.{domain}.{split} must be at least 1, got {c.get(split)}")
    start = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    photos = {p.name: load_photo(p) for p in PHOTOS}
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is an ordinary folder
    try:
        rows = []
        for domain in ("source", "target"):
            rows += generate_domain(tmp, domain, counts[domain], image_size, seed, photos, recipes[domain],
                                    progress)
        manifest = {"seed": seed, "image_size": image_size, "counts_per_class": counts,
                    "recipes": {k: asdict(v) for k, v in recipes.items()},
                    "domain_photos": {k: list(v) for k, v in DOMAIN_PHOTOS.items()}, "files": rows}
        write_json(tmp / "manifest.json", manifest)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    return {"seed": seed, "image_size": image_size, "images": len(rows),
            "per_domain": {d: {s: _count(rows, d, s) for s in SPLITS} for d in counts},
            "seconds": round(seconds, 2)}


def _count(rows: list[dict], domain: str, split: str) -> dict[str, int]:
    sel = [r for r in rows if r["path"].startswith(f"{domain}/{split}/")]
    return {"real": sum(r["label"] == 0 for r in sel), "fake": sum(r["label"] == 1 for r in sel)}


def _replace_dir(tmp: Path, out: Path) -> None:
    """Swap a finished temporary folder into place (the old one, if any, is removed after the swap)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "d")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
