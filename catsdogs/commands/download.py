"""Fetch a public dataset archive, check it against its pinned SHA-256, and unpack it safely.

    catsdogs download petimages --into ~/data/petimages
    catsdogs download petimages --archive ~/Downloads/kagglecatsanddogs_5340.zip
    catsdogs download --archive photos.tar.gz --sha256 <64 hex digits> --into photos

Downloads go through Keras' own `keras.utils.get_file` (its cache in ~/.keras/datasets, its
hash check); an archive you already have is checked with `--archive`. Nothing is unpacked
unless the SHA-256 matches and every member stays inside `--into` (catsdogs.data.archives).
CIFAR-10 needs no command: `catsdogs train --dataset cifar10` fetches it through
`keras.datasets.cifar10`, whose download Keras checks against its own pinned hash.
"""

from catsdogs.config import command_parser
from catsdogs.data.download import SOURCES, fetch
from catsdogs.errors import command_main


def build_parser():
    parser = command_parser("download", __doc__)
    parser.add_argument("name", nargs="?", choices=sorted(SOURCES),
                        help="a published dataset (omit it for your own --archive)")
    parser.add_argument("--into", help="new folder to unpack into [default: ./NAME]")
    parser.add_argument("--archive", help="an archive already on disk, instead of downloading")
    parser.add_argument("--sha256", help="the archive's expected SHA-256 (hex)")
    return parser


def _run(args):
    folder = fetch(args.name, args.into, args.archive, args.sha256)
    print(f"Unpacked into {folder}")
    print(f"Check it:  python -m catsdogs.doctor {folder}")
    print(f"Train:     python -m catsdogs.train --data {folder}")
    return 0


main = command_main(build_parser, _run)
