"""Execute notebooks in full mode (FAST = False, on ../shared/data) and save them with their
outputs: how the committed outputs are made.

    python notebooks/run_full.py notebooks/02_cifar10.ipynb notebooks/03_export_and_deploy.ipynb

Each notebook's `parameters` cell is set to FAST = False, every cell runs from notebooks/ (as
Jupyter runs it) with no time limit, and the text streams are stored as a notebook viewer would
show them once the cell finished: a line that a progress bar rewrote with carriage returns
keeps its last state, and terminal colour codes are dropped. A notebook whose cell fails is
not written.
"""

import argparse
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def as_rendered(text):
    """`text` as a terminal would leave it: colour codes dropped, carriage-return rewrites
    collapsed to their last state."""
    lines = ANSI.sub("", text).split("\n")
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in lines)


def run_full(path):
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1 or "FAST = " not in cells[0].source:
        sys.exit(f"{path}: needs exactly one cell tagged 'parameters' that sets FAST")
    cells[0].source = cells[0].source.replace("FAST = True", "FAST = False")
    NotebookClient(notebook, timeout=None, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(path).resolve().parent)}}).execute()
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] = as_rendered(output["text"])
    nbformat.write(notebook, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    for path in parser.parse_args().notebooks:
        print(f"running {path} with FAST = False", flush=True)
        run_full(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)


if __name__ == "__main__":
    main()
