"""Flags that several commands share, defined once."""

from catsdogs.inference.tta import TTA_MODES


def add_inference_flags(parser):
    """--tta [flip|shift] and --batch-size, shared by predict and evaluate."""
    parser.add_argument("--tta", nargs="?", const="flip", choices=TTA_MODES,
                        help="test-time augmentation: average the image with its mirror image "
                             "(flip, the default), or also with 1-px shifts of both (shift)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call "
                                                                   "[default: 64]")
