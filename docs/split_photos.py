"""Split a folder of CIFAR-10 photos into train/ and test/ class folders for the notebooks' CPU recipe.

    python docs/split_photos.py ../shared/data/cifar10-train-subset data/photos

The source holds one folder per class of files named after the CIFAR-10 training batch they come from
(`b1_0029.png` is image 29 of data_batch_1). Batches 1-4 go to `train/` and batch 5 to `test/`, so the
test photos are never trained on and the split is the same on every machine. The files are copied; the
destination appears only once complete, and an existing one is left as it is.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

TEST_BATCHES = {"5"}
BATCH = re.compile(r"^b(\d+)_")


def split(source: Path, dest: Path) -> dict[str, int]:
    """Copy `source/<class>/b<k>_*.png` to `dest/train/<class>/` (k = 1-4) or `dest/test/<class>/` (k = 5)."""
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{source} has no class folders")
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run
    counts = {"train": 0, "test": 0}
    for folder in classes:
        for path in sorted(folder.iterdir()):
            found = BATCH.match(path.name)
            if not found or not path.is_file():
                raise ValueError(f"{path}: expected a file named b<batch>_<index>.<ext>, as in {source}")
            part = "test" if found.group(1) in TEST_BATCHES else "train"
            (partial / part / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, partial / part / folder.name / path.name)
            counts[part] += 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, dest)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="class folders of photos named b<batch>_<index>.png")
    parser.add_argument("dest", type=Path, help="new folder to hold train/ and test/")
    args = parser.parse_args(argv)
    if (args.dest / "train").is_dir() and (args.dest / "test").is_dir():
        print(f"{args.dest} already holds train/ and test/; left as it is")
        return 0
    if args.dest.exists():
        parser.error(f"{args.dest} exists without train/ and test/ folders: give a new folder")
    if not args.source.is_dir():
        parser.error(f"{args.source} is not a folder (see ../shared/data/README.md)")
    try:
        counts = split(args.source, args.dest)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.dest}: {counts['train']:,} training and {counts['test']:,} test photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
