"""A port another program holds: one `error:` line naming --port, exit 2, nothing served or
printed before it (catsdogs binds the port itself, before the model loads: serve/ports.py)."""

import contextlib
import json
import socket

import pytest

from catsdogs.commands.serve import main as serve_main
from catsdogs.errors import CatsDogsError
from catsdogs.serve.settings import ServeConfig


@contextlib.contextmanager
def held_port():
    """A port on 127.0.0.1 that a plain socket listens on (as `python -m http.server` would)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An untrained seed-cifar10 two-class model and its class names."""
    from catsdogs.models.presets import get_preset

    run = tmp_path_factory.mktemp("port") / "run"
    run.mkdir()
    get_preset("seed-cifar10").build(2).save(run / "model.keras")
    (run / "class_names.json").write_text(json.dumps(["cats", "dogs"]))
    return run


def test_a_port_in_use_is_one_error_line_naming_port_and_nothing_on_stdout(capsys, run_dir):
    with held_port() as port:
        code = serve_main([str(run_dir), "--port", str(port)])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.out == "", captured.out  # no "Serving ..." before the error
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, lines
    assert lines[0] == (f"error: port {port} on 127.0.0.1 is in use (--port): stop what holds "
                        f"it or pass another --port"), lines


@pytest.mark.parametrize("workers", [1, 2])
def test_the_port_is_checked_before_anything_is_served(workers):
    from catsdogs.serve.ports import reserve
    from catsdogs.serve.workers import bind

    with held_port() as port:
        with pytest.raises(CatsDogsError) as raised:
            if workers == 1:
                reserve(ServeConfig(port=port))
            else:
                bind("127.0.0.1", port, listen=False)
    assert raised.value.where == "--port" and str(port) in str(raised.value)


def test_a_reserved_port_is_held_until_closed():
    from catsdogs.serve.ports import reserve

    with held_port() as port:
        pass  # free again
    with reserve(ServeConfig(port=port)):
        with pytest.raises(CatsDogsError):  # held: no second server on it
            reserve(ServeConfig(port=port))
    reserve(ServeConfig(port=port)).close()  # closed: free
