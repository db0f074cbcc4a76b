"""Reading the text files users write (suites, golden sets, text sets): UTF-8, a BOM allowed.

Editors on Windows routinely save UTF-8 with a byte-order mark, so a leading
BOM is dropped rather than rejected. An invalid byte is a SuiteError naming
the file, line and column, never a bare UnicodeDecodeError.
"""
from __future__ import annotations

import codecs
from pathlib import Path

from harness.errors import SuiteError


def read_utf8(path: Path, *, what: str) -> str:
    """The text of `path` decoded as UTF-8, without a leading BOM.

    `what` names the kind of file in messages ("golden set", "suite file").
    A file that cannot be read, or holds a byte that is not UTF-8, is a
    SuiteError: `what PATH:LINE:COLUMN: invalid UTF-8 byte 0xff; save the file as UTF-8`,
    where the column counts characters from 1.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "t.jsonl"; _ = p.write_bytes(b"\\xef\\xbb\\xbfab\\n")
    >>> read_utf8(p, what="golden set")
    'ab\\n'
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SuiteError(f"{what} {path}: cannot read: {e.strerror or e}") from e
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        line = data.count(b"\n", 0, e.start) + 1
        column = len(data[line_start:e.start].decode("utf-8", errors="replace")) + 1
        raise SuiteError(f"{what} {path}:{line}:{column}: invalid UTF-8 byte 0x{data[e.start]:02x}; "
                         "save the file as UTF-8") from None
