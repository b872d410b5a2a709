"""Fetch a backbone's ImageNet weights ahead, so --weights imagenet works without the network.

    catsdogs weights fetch mobilenetv3-catsdogs               # into ~/.keras/models: Keras' cache
    catsdogs weights fetch convnexttiny-catsdogs --into usb/  # a folder to carry elsewhere

Keras' own downloader (keras.utils.get_file) fetches the *_notop.h5 file keras.applications
would, and checks it against the hash keras.applications pins; a file already there with that
hash is kept. Afterwards, offline: `catsdogs train --preset NAME --weights imagenet` finds it in
~/.keras/models (copy it to the same place on another machine), and a copy anywhere else is
`--weights FOLDER/FILE`.
"""

from catsdogs.config import command_parser
from catsdogs.errors import command_main

ACTIONS = ("fetch",)


def build_parser():
    from catsdogs.models.presets import PRESETS

    parser = command_parser("weights", __doc__)
    parser.add_argument("action", choices=ACTIONS, help="fetch: download NAME's weights")
    parser.add_argument("name", metavar="NAME", help="a preset with ImageNet weights: " + ", ".join(
        name for name, preset in PRESETS.items() if preset.pretrainable))
    parser.add_argument("--into", metavar="FOLDER",
                        help="save the file in FOLDER, for --weights FOLDER/FILE [default: "
                             "Keras' cache, ~/.keras/models, where --weights imagenet looks]")
    return parser


def _run(args):
    from catsdogs.models.presets import imagenet_weights

    weights = imagenet_weights(args.name)
    path = weights.fetch(args.into)
    print(f"Weights: {path} (hash checked)")
    start = "--weights imagenet" if args.into is None else f"--weights {path}"
    print(f"Train:   python -m catsdogs.train --preset {args.name} {start}")
    return 0


main = command_main(build_parser, _run)
