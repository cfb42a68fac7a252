"""Pack a prepared work folder's photos small enough to carry to a lent GPU machine.

    python trainer/recipes/pack_photos.py WORKDIR OUT [--short-side 256] [--split-mb 55]

Writes OUT/photos.tar (every manifest photo under its path relative to the data root, photos
whose short side exceeds --short-side resized to it as JPEG quality 85, smaller ones copied as
they are) split into OUT/photos.tar.part-* of --split-mb MB, and OUT/workdir/ (manifest.csv with
paths starting "@DATA@/", labels.json, summary.json). On the GPU machine, join the parts, unpack
them into DATA and replace "@DATA@" with DATA in the manifest: trainer/recipes/gpu_study.sh
does both. Training sees the same photos, labels and splits as on the machine that prepared
them; only photos larger than the training crop's source size are smaller.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from catbreed_desktop.core.photos import load_photo  # noqa: E402
from trainer.dataset import LABELS_FILE, SUMMARY_FILE, read_manifest, write_manifest  # noqa: E402

PLACEHOLDER = "@DATA@"


def compact_bytes(path: Path, short_side: int) -> bytes:
    """The photo's bytes, or a resized JPEG when its short side is above `short_side`."""
    with Image.open(path) as probe:
        width, height = probe.size
    if min(width, height) <= short_side:
        return path.read_bytes()
    image = load_photo(path)
    scale = short_side / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--split-mb", type=int, default=55)
    args = parser.parse_args()
    summary = json.loads((args.workdir / SUMMARY_FILE).read_text(encoding="utf-8"))
    root = (args.workdir / summary["data_root"]).resolve()
    samples = read_manifest(args.workdir)
    args.out.mkdir(parents=True, exist_ok=True)
    tar_path = args.out / "photos.tar"
    relative = {}
    with tarfile.open(tar_path, "w") as archive:
        for number, sample in enumerate(samples):
            name = sample.path.resolve().relative_to(root).as_posix()
            relative[sample.path] = name
            data = compact_bytes(sample.path, args.short_side)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
            if number % 2000 == 0:
                print(f"{number}/{len(samples)}", file=sys.stderr)
    size = tar_path.stat().st_size
    part_bytes = args.split_mb * 1_000_000
    with open(tar_path, "rb") as whole:
        for index in range((size + part_bytes - 1) // part_bytes):
            (args.out / f"photos.tar.part-{index}").write_bytes(whole.read(part_bytes))
    tar_path.unlink()
    workdir_out = args.out / "workdir"
    workdir_out.mkdir(exist_ok=True)
    write_manifest(
        workdir_out,
        [
            dataclasses.replace(sample, path=Path(f"{PLACEHOLDER}/{relative[sample.path]}"))
            for sample in samples
        ],
    )
    for name in (LABELS_FILE, SUMMARY_FILE):
        shutil.copy(args.workdir / name, workdir_out / name)
    print(f"{len(samples)} photos, {size / 1e6:.1f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
