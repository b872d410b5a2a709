"""One module per `catsdogs` command: flags -> settings -> a function of its stage.

Each has `build_parser()` and `main(argv) -> exit code`; `catsdogs.cli` dispatches to them and
`python -m catsdogs.<command>` reaches them through a shim. No library module imports these.
"""
