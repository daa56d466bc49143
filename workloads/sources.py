"""Where a trace comes from: bundled names, files (gzip read transparently), format detection.

Formats are told apart by content, never by file name: the first line of the (decompressed) file
is a CSV header naming Azure's or BurstGPT's columns, a JSON object with Mooncake's
`input_length`, or the start of a ShareGPT document (`[` or an object with `conversations`).

Before any format is read, the start of the file must be UTF-8 text: UTF-16 and UTF-32 (with a
byte-order mark or the NUL pattern of mostly ASCII text) and binary data are refused, each by name.
Damaged gzip data raises TraceError at the line the decompressed text had reached, whichever
reader meets it.
"""
from __future__ import annotations

import csv
import gzip
import json
import re
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Iterator

from workloads.trace import FORMAT_HINT, TraceError

# bundled name -> file in workloads/data/ (see workloads/data/README.md for attribution)
BUNDLED = {
    "azure-conv": "azure_conv.csv.gz",
    "mooncake-conv": "mooncake_conversation.jsonl.gz",
}

NOT_UTF8 = "bytes that are not UTF-8; save the file as UTF-8"

_GZIP_MAGIC = b"\x1f\x8b"
_TEXT_SAMPLE_BYTES = 4096  # how much of the start is checked for being UTF-8 text
# Control bytes that UTF-8 text of any trace format has no use for (tab, line and page breaks are
# fine); one of them near the start means the file is not text at all.
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
_SNIFF_BYTES = 1 << 20  # enough for any header or Mooncake line; a one-line JSON document is cut
UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


@dataclass(frozen=True)
class Source:
    """A trace file ready to open: its path, short name, and how messages and attrs name it."""

    path: Path
    name: str
    display: str

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """The file's bytes, decompressed if it is gzip; damaged gzip data raises TraceError."""
        with open(self.path, "rb") as probe:
            compressed = probe.read(2) == _GZIP_MAGIC
        if not compressed:
            with open(self.path, "rb") as handle:
                yield handle
            return
        # The damage surfaces wherever a reader happens to be reading, possibly inside pandas;
        # catching it here turns it into one message whichever reader hit it.
        try:
            with gzip.open(self.path, "rb") as handle:
                yield handle
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            line, detail = gzip_damage(self.path)
            raise TraceError(
                self.display, line, "(file)", f"damaged gzip data: {detail or exc}"
            ) from None

    def first_line(self) -> bytes:
        """The first line (decompressed), after checking that the file starts as UTF-8 text."""
        with self.open() as handle:
            head = handle.read(_TEXT_SAMPLE_BYTES)
            end = head.find(b"\n")
            if end >= 0:
                line = head[: end + 1]
            else:
                line = head + handle.readline(_SNIFF_BYTES - len(head))
        self._check_text(head)
        return line.removeprefix(UTF8_BOM)

    def _check_text(self, head: bytes) -> None:
        """Refuse UTF-16 and UTF-32 text, named as such, and binary data, named as that."""
        for bom, encoding in _WIDE_BOMS.items():
            if head.startswith(bom):
                raise TraceError(
                    self.display, 1, "encoding", f"the file is {encoding}; save it as UTF-8"
                )
        encoding = _wide_encoding(head)
        if encoding is not None:
            raise TraceError(
                self.display, 1, "encoding",
                f"the file looks like {encoding} without a byte-order mark (NUL bytes in a regular "
                "pattern); save it as UTF-8",
            )
        found = _BINARY.search(head)
        if found is not None:
            at = found.start()
            raise TraceError(
                self.display, head.count(b"\n", 0, at) + 1, "(file)",
                f"not a text trace: binary data at byte {at}", head[at : at + 8],
            )

    def csv_header(self) -> list[str]:
        """The column names of the first line, stripped; [] when it is empty."""
        raw = self.first_line().strip()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TraceError(self.display, 1, "header", f"{NOT_UTF8} (byte {exc.start})") from None
        if "\r" in text:
            # A lone carriage return splits the line for pandas but not for csv: refuse it here.
            at = text.index("\r")
            raise TraceError(
                self.display, 1, "header",
                f"a carriage return (\\r) inside the line, at character {at + 1}; save the "
                "file with \\n or \\r\\n line endings", text[max(0, at - 20) : at + 20],
            )
        try:
            names = next(csv.reader([text]), [])
        except csv.Error as exc:
            raise TraceError(self.display, 1, "header", f"unreadable CSV: {exc}", text) from None
        return [name.strip() for name in names]


def _wide_encoding(head: bytes) -> str | None:
    """"UTF-16" or "UTF-32" when the NUL bytes of head fall as they do in such text; else None.

    In UTF-16 text of mostly ASCII characters, every other byte is NUL and the bytes between are
    not; in UTF-32, three bytes of four. Binary data has NUL bytes, but not in that pattern.
    """
    if head.count(0) < len(head) // 4 or len(head) < 4:
        return None
    for width, encoding in ((4, "UTF-32"), (2, "UTF-16")):
        lanes = [head[lane::width] for lane in range(width)]
        text_lanes = [lane for lane in lanes if 0 not in lane]
        nul_lanes = [lane for lane in lanes if lane.count(0) * 2 >= len(lane)]
        if len(text_lanes) == 1 and len(nul_lanes) == width - 1:
            return encoding
    return None


def gzip_damage(path: Path) -> tuple[int, str]:
    """(line the decompressed text had reached, what is wrong) for a damaged gzip file.

    Decompresses again from the start, so it costs a second pass; it only runs once reading failed.
    The detail is "" when this pass finds nothing wrong (then the gzip module's own error says it).
    """
    lines = 1
    decompressor = zlib.decompressobj(wbits=31)  # 31: expect a gzip header and trailer
    in_member = True
    pending = b""
    with open(path, "rb") as handle:
        while True:
            # Small blocks, so that the count stops close to where the data breaks.
            block = pending or handle.read(4096)
            pending = b""
            if not block:
                if not in_member:
                    return lines, ""
                return lines, "the file ends before the compressed data does (truncated?)"
            in_member = True
            try:
                lines += decompressor.decompress(block).count(b"\n")
            except zlib.error as exc:
                if "check" in str(exc):  # zlib's words for a CRC or length mismatch
                    return lines, "the data does not match its gzip checksum (corrupted file)"
                return lines, f"corrupt compressed data (zlib: {exc})"
            if decompressor.eof:
                # A gzip file may hold several members, one after another.
                pending = decompressor.unused_data
                decompressor = zlib.decompressobj(wbits=31)
                in_member = False


@contextmanager
def resolve(source: str | Path) -> Iterator[Source]:
    """A bundled trace name ("azure-conv") or a path, as a Source."""
    if isinstance(source, str) and source in BUNDLED:
        ref = resources.files("workloads").joinpath("data", BUNDLED[source])
        with resources.as_file(ref) as path:
            yield Source(path, source, f"workloads/data/{BUNDLED[source]}")
        return
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"no trace file {str(source)!r}, and no bundled trace of that name "
            f"(bundled: {', '.join(BUNDLED)})"
        )
    name = path.name.removesuffix(".gz")
    yield Source(path, name.rsplit(".", 1)[0] if "." in name else name, str(source))


def detect_format(source: Source) -> str:
    """The format of a file, from its first line."""
    raw = source.first_line().strip()
    if not raw:
        raise TraceError(source.display, 1, "header", "the first line is empty (empty file?)")
    if raw.startswith(b"["):
        return "sharegpt"
    if raw.startswith(b"{"):
        # The JSON readers check the encoding line by line; a cut first line may end mid-character.
        return _detect_json(source, raw.decode("utf-8", errors="replace"))
    columns = set(source.csv_header())
    # One telling column is enough: the reader then names any missing one.
    if columns & {"ContextTokens", "GeneratedTokens"}:
        return "azure"
    if columns & {"Request tokens", "Response tokens"}:
        return "burstgpt"
    raise TraceError(
        source.display, 1, "header", "not a known trace format", sorted(columns), hint=FORMAT_HINT
    )


def _detect_json(source: Source, text: str) -> str:
    try:
        first = json.loads(text)
    except json.JSONDecodeError:
        # A broken Mooncake line is reported by its reader; anything else spanning lines (or cut
        # at _SNIFF_BYTES) is a ShareGPT document.
        return "mooncake" if '"input_length"' in text else "sharegpt"
    if isinstance(first, dict) and "input_length" in first:
        return "mooncake"
    if isinstance(first, dict) and "conversations" in first:
        return "sharegpt"
    raise TraceError(
        source.display, 1, "header", "a JSON object of no known trace format",
        sorted(first) if isinstance(first, dict) else first, hint=FORMAT_HINT,
    )
