"""A copy of a folder of class folders with every photo decoded at one size, as catsdogs
decodes it (data/images.decode_image), and stored as JPEG at quality 95 without chroma
subsampling: a data set small enough to travel to a machine that cannot read the original
(a GPU machine with a limit on what it is sent). Training at that size then decodes these
pixels again with only JPEG's rounding between them and the originals.

    python bench/photos_at_size.py ../shared/data/cats_and_dogs OUT --size 112
"""

import argparse
from pathlib import Path

from PIL import Image


def main():
    from catsdogs.data.images import decode_image, has_image_extension

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, required=True, help="the side of the decoded photos")
    args = parser.parse_args()
    count = 0
    for path in sorted(args.source.rglob("*")):
        if not (path.is_file() and has_image_extension(path)):
            continue
        target = (args.out / path.relative_to(args.source)).with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = decode_image(path, (args.size, args.size))
        Image.fromarray(pixels).save(target, quality=95, subsampling=0)
        count += 1
    print(f"{count} photos at {args.size}x{args.size} in {args.out}")


if __name__ == "__main__":
    main()
