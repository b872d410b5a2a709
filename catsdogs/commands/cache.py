"""List or clear the disk caches of decoded images (catsdogs train --cache disk).

    catsdogs cache list                      # each cache: source folder, size, images, bytes, last use
    catsdogs cache clear                     # remove them all (a cache in use is left)
    catsdogs cache clear --older-than 30     # only those unused for 30 days
    catsdogs cache list --cache-dir /scratch/catsdogs-cache

Caches live in $CATSDOGS_CACHE, else $XDG_CACHE_HOME/catsdogs or ~/.cache/catsdogs; a removed
cache is only decoded again, from your photos, by the next run that needs it.
"""

import time

from catsdogs.config import command_parser
from catsdogs.errors import CatsDogsError, command_main

ACTIONS = ("list", "clear")


def build_parser():
    parser = command_parser("cache", __doc__)
    parser.add_argument("action", choices=ACTIONS, help="list the caches, or remove them")
    parser.add_argument("--older-than", type=float, metavar="DAYS",
                        help="clear: only caches last used more than DAYS days ago")
    parser.add_argument("--cache-dir", metavar="FOLDER",
                        help="where the caches are [default: $CATSDOGS_CACHE, else "
                             "$XDG_CACHE_HOME/catsdogs or ~/.cache/catsdogs]")
    return parser


def _run(args):
    from catsdogs.data.cache import cache_root, clear_caches, list_caches

    root = cache_root(args.cache_dir)
    if args.older_than is not None and (args.action != "clear" or not args.older_than >= 0):
        raise CatsDogsError(f"bad value for --older-than: expected a number of days >= 0 with "
                            f"clear, received {args.older_than!r} with {args.action}",
                            fix="e.g. catsdogs cache clear --older-than 30")
    if args.action == "list":
        caches = list_caches(root)
        for cache in caches:
            print(_line(cache))
        print(f"{len(caches)} cache(s), {sum(c['bytes'] for c in caches) / 1e6:,.1f} MB in {root}")
        return 0
    removed, busy = clear_caches(root, args.older_than)
    for cache in busy:
        print(f"in use, left: {cache['folder']}")
    print(f"Removed {len(removed)} cache(s), {sum(c['bytes'] for c in removed) / 1e6:,.1f} MB "
          f"from {root}")
    return 0


def _line(cache):
    size = "x".join(map(str, cache["image_size"])) if cache["image_size"] else "?"
    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(cache["last_used"]))
    return (f"{cache['source']}  {size}  {cache['images']} images  "
            f"{cache['bytes'] / 1e6:,.1f} MB  last used {used}  ({cache['folder']})")


main = command_main(build_parser, _run)
