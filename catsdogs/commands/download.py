"""Fetch a public dataset archive, check it against its pinned SHA-256, and unpack it safely.

    catsdogs download petimages --into ~/data/pets       # then --data ~/data/pets/PetImages
    catsdogs download petimages --archive ~/Downloads/kagglecatsanddogs_5340.zip
    catsdogs download --archive photos.tar.gz --sha256 <64 hex digits> --into photos
    catsdogs download cifar10 --into ~/data/cifar10      # train/ and test/ class folders of PNGs

Downloads go through Keras' own `keras.utils.get_file` (its cache in ~/.keras/datasets, its
hash check); an archive you already have is checked with `--archive`. Nothing is unpacked
unless the SHA-256 matches and every member stays inside `--into` (catsdogs.data.archives).
CIFAR-10 comes through `keras.datasets.cifar10` (Keras checks its download against its own
pinned hash): `catsdogs train --dataset cifar10` reads its arrays as they are; `download cifar10`
writes them as PNG class folders, which `--data` reads at any --image-size.
"""

from catsdogs.config import command_parser
from catsdogs.data.download import CIFAR10, SOURCES, fetch, write_cifar10
from catsdogs.errors import CatsDogsError, command_main


def build_parser():
    parser = command_parser("download", __doc__)
    parser.add_argument("name", nargs="?", choices=sorted([*SOURCES, CIFAR10]),
                        help="a published dataset (omit it for your own --archive)")
    parser.add_argument("--into", help="new folder to unpack or write into [default: ./NAME]")
    parser.add_argument("--archive", help="an archive already on disk, instead of downloading")
    parser.add_argument("--sha256", help="the archive's expected SHA-256 (hex)")
    return parser


def _run(args):
    if args.name == CIFAR10:
        return _cifar10(args)
    folder = fetch(args.name, args.into, args.archive, args.sha256)
    print(f"Unpacked into {folder}")
    print(f"Check it:  python -m catsdogs.doctor {folder}")
    print(f"Train:     python -m catsdogs.train --data {folder}")
    return 0


def _cifar10(args):
    if args.archive or args.sha256:
        raise CatsDogsError("cifar10 comes through Keras' downloader, with its own pinned hash",
                            where="--archive" if args.archive else "--sha256",
                            fix="drop it (Keras keeps its download in ~/.keras/datasets)")
    folder = write_cifar10(args.into or CIFAR10)
    print(f"Wrote {folder}/train and {folder}/test (PNG class folders)")
    print(f"Train:     python -m catsdogs.train --dataset cifar10 --data {folder}")
    return 0


main = command_main(build_parser, _run)
