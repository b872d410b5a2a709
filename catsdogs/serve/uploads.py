"""Multipart uploads parsed in memory, from a body already read (and bounded) whole.

Starlette's `request.form()` streams file parts into SpooledTemporaryFiles that move to disk
past 1 MB, and its `max_part_size` bounds only the non-file fields. The server instead reads
the body under Admission's limit (catsdogs/serve/admission.py: Content-Length or counted as it
streams) and hands the bytes to python-multipart's own parser, so an upload is never larger
than --max-upload-mb and never touches the disk.
"""

from python_multipart.multipart import (MultipartParseError, MultipartParser, MultipartState,
                                        parse_options_header)

from catsdogs.serve.errors import ServeError


def is_multipart(content_type):
    return parse_options_header(content_type)[0] == b"multipart/form-data"


def parse_uploads(body, content_type, max_files):
    """[(filename, bytes)] of the file parts of a multipart/form-data `body`, in order.

    Fields without a filename (plain form fields) are skipped. Raises ServeError: 400 for a
    malformed body, 413 for more than `max_files` files.
    """
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise ServeError(400, "malformed multipart body: no boundary in Content-Type")
    files, part = [], {}

    def on_part_begin():
        part.update(headers={}, field=b"", value=b"", data=bytearray())

    def on_header_field(data, start, end):
        part["field"] += data[start:end]

    def on_header_value(data, start, end):
        part["value"] += data[start:end]

    def on_header_end():
        part["headers"][part["field"].lower()] = part["value"]
        part["field"] = part["value"] = b""

    def on_part_data(data, start, end):
        part["data"] += data[start:end]

    def on_part_end():
        disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))[1]
        if b"filename" not in disposition:
            return
        files.append((disposition[b"filename"].decode("utf-8", "replace"), bytes(part["data"])))
        if len(files) > max_files:
            raise ServeError(413, f"over {max_files} images in one request")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        parser.write(body)  # bytes or the bytearray read: no copy of the whole body
        parser.finalize()
    except MultipartParseError as error:
        raise ServeError(400, f"malformed multipart body: {error}") from None
    if parser.state != MultipartState.END:
        raise ServeError(400, "malformed multipart body: it ends before its closing boundary")
    return files
