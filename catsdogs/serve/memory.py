"""How much memory the server may reach, printed at start, and how much a process holds.

The bound is what the server holds before the first request (model, runtime, a warm-up at
the largest batch), plus what the admission bounds let requests hold (catsdogs/serve/
admission.py), each term with the copies a request makes. Read from /proc (Linux), so no
psutil is needed.
"""

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

from catsdogs.data.images import MAX_DECODED_BYTES
from catsdogs.serve.parsing import MAX_HEAD_BYTES, MAX_PIPELINED, QUEUED_BODY_BYTES

# a body is held as received, as the JSON's str and as the base64-decoded bytes: < 3 copies
BODY_COPIES = 3
# an image being decoded: Pillow's pixels and the shrunk copy made from them
DECODE_COPIES = 2
# one open connection: one read from the socket (uvloop's buffer, 256 KiB), the body uvicorn
# buffers before flow control pauses reading (64 KiB, overshot by at most that read), the
# same for a request queued behind others, and the heads its parser may hold (parsing.py:
# each at most about twice MAX_HEAD_BYTES in memory)
READ_BYTES = 256 * 2**10
CONNECTION_BYTES = (READ_BYTES + (HIGH_WATER_LIMIT + READ_BYTES) + (QUEUED_BODY_BYTES + READ_BYTES)
                    + (MAX_PIPELINED + 1) * 2 * MAX_HEAD_BYTES)


def process_memory(pid="self"):
    """{"VmRSS": bytes, "VmHWM": bytes} of a process (VmHWM: its peak resident size so far)."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def memory_bound(base_bytes, config, image_size):
    """(bound, {term: bytes}): the peak resident size the server stays under, as printed.

    Args:
        base_bytes: resident size after loading the model and one warm-up batch.
        config: the ServeConfig (its admission bounds).
        image_size: (height, width) of the model's input.
    """
    height, width = image_size
    largest_batch = max(config.batching.max_batch, config.max_instances)
    terms = {
        "model and runtime": base_bytes,
        "requests in flight": BODY_COPIES * config.max_inflight_bytes,
        "decoding": DECODE_COPIES * config.decode_workers * MAX_DECODED_BYTES,
        "batch": largest_batch * height * width * 3 * (1 + 4),  # uint8 pixels, float32 copy
        "connections": config.max_connections * CONNECTION_BYTES,
    }
    return sum(terms.values()), terms


def describe_bound(bound, terms):
    mb = 1e6
    parts = ", ".join(f"{name} {size / mb:.0f}" for name, size in terms.items())
    return f"memory bound: peak RSS under {bound / mb:.0f} MB ({parts} MB)"
