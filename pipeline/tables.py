"""Sales tables from CSV or Parquet, read by pyarrow and checked a column at a time.

A well-formed column costs one vectorized cast and one range check, so a
million rows load in well under a second. Only a column that fails the cast
is walked cell by cell, to name every bad value with the words the service
uses (pipeline.schema.domain_problem). Problems are (row index, column,
problem); the caller turns row indexes into lines of a CSV or rows of a
Parquet file.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .errors import DataError
from .schema import SERIES_COLUMN, TIME_COLUMN, domain_of, domain_problem

PARQUET_SUFFIXES = (".parquet", ".pq")
DATA_SUFFIXES = (".csv", *PARQUET_SUFFIXES)
# Rows per chunk when a file is streamed (demand predict): big enough that
# per-chunk costs vanish, small enough that memory stays flat.
STREAM_CHUNK_ROWS = 500_000
STREAM_BLOCK_BYTES = 8 << 20  # about 230k rows of a CSV like the embedded one; pyarrow reads several ahead

# A bad cell or row: (row index, column, what is wrong).
Problem = tuple[int, str, str]


def is_parquet(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(PARQUET_SUFFIXES)


def row_label(parquet: bool) -> Callable[[int], str]:
    """How a row index is named in messages: CSV lines count the header, Parquet rows from 1."""
    return (lambda index: f"row {index + 1}") if parquet else (lambda index: f"line {index + 2}")


@dataclass
class Columns:
    """Checked columns of one table (or chunk): numbers as float64, weeks as datetime64[D]."""

    values: dict[str, np.ndarray]  # NaN where a number was bad
    rows: int
    problems: list[Problem] = field(default_factory=list)  # (row index, column, problem)

    def bad_rows(self) -> np.ndarray:
        return np.unique(np.array([index for index, _, _ in self.problems], dtype=np.int64))

    def good(self) -> np.ndarray:
        """A mask of the rows without a problem."""
        keep = np.ones(self.rows, dtype=bool)
        keep[self.bad_rows()] = False
        return keep


HEADER_READ_BYTES = 1 << 16  # read at a time while looking for the end of the header


def header_line(read: Callable[[int], bytes]) -> bytes:
    """The bytes of a CSV's first line, from `read(n)` (a file's read, or a slice of bytes in memory)."""
    head = b""
    while True:
        block = read(HEADER_READ_BYTES)
        head += block
        end = min((i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0), default=-1)
        if end >= 0:
            return head[:end]
        if not block:
            return head


# What a file that is not text most likely is, by its first bytes.
NOT_TEXT = {
    b"\x1f\x8b": "it is gzip-compressed: decompress it first",
    b"PAR1": "it is a Parquet file: name it .parquet",
    b"PK\x03\x04": "it is a zip archive (an Excel workbook?): export it as CSV",
}


def not_text(path: str | os.PathLike[str], start: bytes) -> DataError:
    """The error for a file that is not UTF-8 text, with what it seems to be from its first bytes."""
    hint = next((what for magic, what in NOT_TEXT.items() if start.startswith(magic)), None)
    return DataError(f"{path}: not a UTF-8 text file" + (f"; {hint}" if hint else ""))


# Columns a table may have: a forecast reads a dozen. Far more is no sales
# table, and each column costs every step of the reading.
MAX_COLUMNS = 10_000
MAX_HEADER_NAME = 1_000  # characters of a column's name


def csv_header(line: bytes, path: str | os.PathLike[str]) -> list[str]:
    """The header's names, stripped, from its line's bytes."""
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise not_text(path, line) from None
    try:
        header = [name.strip() for name in next(csv.reader([text]), [])]
    except csv.Error as err:  # a field over the csv module's limit, a NUL byte
        raise DataError(f"{path}: the header cannot be read: {err}") from None
    check_header(header, path)
    return header


def check_header(header: Sequence[str], path: str | os.PathLike[str]) -> None:
    """A clear error for a header of more than MAX_COLUMNS columns or a name longer than MAX_HEADER_NAME."""
    if len(header) > MAX_COLUMNS:
        raise DataError(f"{path}: the header has {len(header):,} columns, more than the limit of {MAX_COLUMNS:,}")
    long = next((name for name in header if len(name) > MAX_HEADER_NAME), None)
    if long is not None:
        raise DataError(
            f"{path}: a column name in the header has {len(long):,} characters, more than the limit of "
            f"{MAX_HEADER_NAME:,}: {long[:40]!r}..."
        )


def require_columns(
    header: Sequence[str],
    columns: Iterable[str],
    path: str | os.PathLike[str],
    renames: Mapping[str, str] | None = None,
    original: Sequence[str] | None = None,
) -> None:
    """A clear error for a missing required column or a name given twice (pyarrow would take one copy).
    `header` and `columns` in our names; the error in the file's: a missing column by the name the file was
    to give it (`renames`, as renamed() takes them), the header as the file has it (`original`)."""
    check_header(header, path)
    counts = Counter(header)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise DataError(f"{path}: the header names {', '.join(map(repr, repeated))} more than once")
    missing = [c for c in columns if c not in header]
    if missing:
        expected = {ours: theirs for theirs, ours in (renames or {}).items()}
        shown = header if original is None else original
        raise DataError(
            f"{path}: missing required column(s) {', '.join(expected.get(name, name) for name in missing)}; "
            f"the header has {', '.join(shown) if shown else 'nothing'}"
        )


def file_names(renames: Mapping[str, str] | None, header: Sequence[str]) -> dict[str, str]:
    """{our name: the file's} of the columns renamed() reads under ours from a file with `header` (its own
    names), to name a column as the file does; a column that has our name in the file keeps it."""
    return {ours: theirs for theirs, ours in (renames or {}).items() if theirs in header}


def renamed(header: list[str], renames: Mapping[str, str] | None, path: str | os.PathLike[str]) -> list[str]:
    """The header with a file's own names for the series, week and target read as ours."""
    if not renames:
        return header
    for theirs, ours in renames.items():
        if ours in header and theirs in header:
            raise DataError(
                f"{path}: the header has both {theirs!r} and {ours!r}; {theirs!r} was named to be read as "
                f"{ours!r}: drop or rename one of them"
            )
    return [renames.get(name, name) for name in header]


def file_header(path: str | os.PathLike[str]) -> list[str]:
    """The column names of a CSV or Parquet file (by its extension), stripped; a clear error when it cannot be
    read."""
    if is_parquet(path):
        try:
            return [name.strip() for name in pq.ParquetFile(path).schema_arrow.names]
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: cannot be read as Parquet: {_arrow_reason(err)}") from None
    try:
        with open(path, "rb") as handle:
            return csv_header(header_line(handle.read), path)
    except OSError as err:
        raise DataError(f"{path}: cannot read the file: {err.strerror}") from None


def header_of_bytes(raw: bytes, path: str | os.PathLike[str]) -> list[str]:
    offset = [0]

    def read(n: int) -> bytes:
        block = raw[offset[0] : offset[0] + n]
        offset[0] += n
        return block

    return csv_header(header_line(read), path)


QUOTE_SCAN_BYTES = 16 << 20  # read at a time by unclosed_quote on a file


def unclosed_quote(read_blocks: Callable[[], Iterable[bytes]], records: int) -> str | None:
    """What is wrong when a quote opened a cell that was never closed, else None.

    `read_blocks()`: the file's bytes, in pieces; `records`: the rows read,
    header and dropped rows included. The cell then runs on to the end of the
    file (or to the next quote), taking the lines after it, and pyarrow and
    Python's csv module both read that without a word: rows would be lost.
    Quotes pair up in a valid CSV (a quote inside a quoted cell is doubled),
    so it shows as an odd number of them with fewer rows than lines, blank
    lines aside. A quote inside an unquoted cell (`65" TV`) is a character of
    it and loses nothing: its file has as many rows as lines, and passes.
    A file with no more lines than rows passes on its line breaks alone, the
    one count that most files need.
    """
    line_breaks, last_byte = 0, b"\n"
    for block in read_blocks():
        line_breaks += int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n")))
        last_byte = block[-1:] or last_byte
    if line_breaks and line_breaks + (last_byte != b"\n") <= records:
        return None
    quotes = line_breaks = returns = 0
    last_byte = b"\n"
    last_quoted: tuple[bytes, int, bytes] | None = (
        None  # (the last block with a quote, line breaks before it, the byte before it)
    )
    for block in read_blocks():
        codes = np.frombuffer(block, dtype=np.uint8)  # numpy counts bytes several times faster than bytes.count
        count = int(np.count_nonzero(codes == ord('"')))
        if count:
            last_quoted = (block, line_breaks, last_byte)
        quotes += count
        line_breaks += int(np.count_nonzero(codes == ord("\n")))
        returns += int(np.count_nonzero(codes == ord("\r")))
        last_byte = block[-1:] or last_byte
    if not line_breaks and returns:  # lines that end in \r alone (old Mac files)
        return unclosed_quote(lambda: (block.replace(b"\r", b"\n") for block in read_blocks()), records)
    lines = line_breaks + (last_byte != b"\n")  # a last line without its line break counts too
    if quotes % 2 == 0 or lines <= records or lines - blank_lines(read_blocks()) <= records:
        return None
    block, before, previous = cast("tuple[bytes, int, bytes]", last_quoted)  # an odd count: some block had a quote
    at = block.rfind(b'"')  # the one left open, when the cell it opens runs to the end
    opens_cell = (block[at - 1 : at] if at else previous) in (b",", b"\n", b"\r")
    quote_line = before + block.count(b"\n", 0, at) + 1
    if opens_cell:
        return (
            f"line {quote_line}: a quote opens a cell that is never closed, so the {lines - quote_line} line(s) "
            "after it would be read into that one cell; close the quote or remove it"
        )
    return (
        'a quoted cell is never closed (the file has an odd number of " characters and fewer rows than lines), '
        "so some lines would be read into another row's cell; check the quotes"
    )


def blank_lines(blocks: Iterable[bytes]) -> int:
    """Empty lines (the readers skip them: no row of their own), with \n or \r\n endings."""
    count, tail = 0, b"\n\n"  # the file's start counts as the end of a line
    for block in blocks:
        codes = np.frombuffer(tail + block, dtype=np.uint8)
        at = np.flatnonzero(codes[2:] == ord("\n")) + 2
        before, two_before = codes[at - 1], codes[at - 2]
        count += int(np.count_nonzero((before == ord("\n")) | ((before == ord("\r")) & (two_before == ord("\n")))))
        tail = (tail + block)[-2:]
    return count


def file_blocks(path: str | os.PathLike[str], size: int = QUOTE_SCAN_BYTES) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from iter(lambda: handle.read(size), b"")


class RaggedRows:
    """pyarrow's invalid-row handler: rows with more or fewer cells than the header are dropped and remembered."""

    def __init__(self) -> None:
        self.rows: list[tuple[int | None, int, int]] = []  # (record number or None, cells, header cells)

    def __call__(self, row: pa_csv.InvalidRow) -> str:
        self.rows.append((row.number, row.actual_columns, row.expected_columns))
        return "skip"


def csv_options(
    header: list[str],
    wanted: list[str],
    ragged: RaggedRows,
    numbers: Collection[str] = (),
    threads: bool = True,
    block_size: int | None = None,
) -> dict[str, Any]:
    """pyarrow's options to read the `wanted` columns: `numbers` parsed as
    float64, the rest as text. With no `numbers` everything is text: the cast
    in check_columns is strict, and a column that fails it is read cell by
    cell with Python's own number parsing, to name each bad value."""
    read = pa_csv.ReadOptions(
        column_names=header, skip_rows=1, use_threads=threads, **({"block_size": block_size} if block_size else {})
    )
    # A quoted cell may hold a line break (as Python's csv module reads it);
    # without this a block boundary inside such a cell splits the record.
    parse = pa_csv.ParseOptions(invalid_row_handler=ragged, newlines_in_values=True)
    types = {name: pa.float64() if name in numbers else pa.string() for name in wanted}
    # Only an empty cell is missing: "NaN" is a number the domain check names.
    convert = pa_csv.ConvertOptions(
        include_columns=wanted,
        column_types=types,
        null_values=[""],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    return dict(read_options=read, parse_options=parse, convert_options=convert)


def read_csv(
    source: bytes,
    path: str | os.PathLike[str],
    header: list[str],
    wanted: list[str],
    numbers: Collection[str],
    threads: bool = True,
) -> tuple[pa.Table, RaggedRows]:
    """(Table, RaggedRows) from a CSV file's bytes: numbers parsed by pyarrow
    when every cell is one (the common case, and the fast one), else all text."""
    if b"\n" not in source and b"\r" not in source:
        source += b"\n"  # a header alone: no rows, rather than pyarrow's "could not skip initial rows"
    for attempt in (numbers, ()):
        ragged = RaggedRows()
        try:
            table = pa_csv.read_csv(pa.BufferReader(source), **csv_options(header, wanted, ragged, attempt, threads))
        except pa.ArrowInvalid as err:
            if attempt:
                continue  # a cell is not a number: read it as text to name it
            if not _is_utf8(source):
                raise not_text(path, source[:4]) from None
            raise DataError(f"{path}: cannot be read as CSV: {_arrow_reason(err)}") from None
        if threads and any(number is None for number, _, _ in ragged.rows):
            # Threads do not know lines: read again on one thread to name them.
            return read_csv(source, path, header, wanted, numbers, threads=False)
        problem = unclosed_quote(lambda: [source], table.num_rows + len(ragged.rows) + 1)
        if problem:
            raise DataError(f"{path}: {problem}")
        return table, ragged
    raise AssertionError("unreachable: the read as text returns or raises")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def refuse_names_in_another_case(header: Sequence[str], names: Sequence[str], path: str | os.PathLike[str]) -> None:
    """`Week` for `week`: the column would be left out without a word (the split
    would then follow row order, one store perhaps held out whole)."""
    exact = set(header)
    for column in header:
        meant = next((name for name in names if column.lower() == name.lower() and column != name), None)
        if meant and meant not in exact:
            raise DataError(
                f"{path}: column {column!r} is not read as {meant!r}: column names are case-sensitive; "
                f"rename it {meant!r}"
            )


def read_csv_table(
    raw: bytes,
    path: str | os.PathLike[str],
    required: Sequence[str],
    optional: Sequence[str] = (TIME_COLUMN, SERIES_COLUMN),
    renames: Mapping[str, str] | None = None,
) -> tuple[pa.Table, RaggedRows]:
    """(pyarrow Table of the required and optional columns, RaggedRows) from the bytes of a CSV file.

    `renames` {the file's name: the name used here} reads a file that names
    its series, week or target its own way.
    """
    original = header_of_bytes(raw, path)
    header = renamed(original, renames, path)
    refuse_names_in_another_case(header, (*required, *optional), path)
    require_columns(header, required, path, renames, original)
    wanted = [*required, *(c for c in optional if c in header)]
    return read_csv(raw, path, header, wanted, required)


def open_parquet(
    source: str | os.PathLike[str] | pa.NativeFile,
    path: str | os.PathLike[str],
    required: Sequence[str],
    renames: Mapping[str, str] | None = None,
) -> tuple[pq.ParquetFile, list[str]]:
    """(ParquetFile, its column names stripped) once the required columns are known to be there."""
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot be read as Parquet: {_arrow_reason(err)}") from None
    original = [name.strip() for name in parquet.schema_arrow.names]
    header = renamed(original, renames, path)
    require_columns(header, required, path, renames, original)
    return parquet, header


def read_parquet_table(
    source: str | os.PathLike[str] | pa.NativeFile,
    path: str | os.PathLike[str],
    required: Sequence[str],
    optional: Sequence[str] = (TIME_COLUMN, SERIES_COLUMN),
    renames: Mapping[str, str] | None = None,
) -> pa.Table:
    """The required and optional columns of a Parquet file, named without stray spaces (and as `renames` says)."""
    parquet, header = open_parquet(source, path, required, renames)
    refuse_names_in_another_case(header, optional, path)  # open_parquet has found the required ones
    wanted = [*required, *(c for c in optional if c in header)]
    by_name = dict(zip(header, parquet.schema_arrow.names))
    try:
        return parquet.read(columns=[by_name[name] for name in wanted]).rename_columns(wanted)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot be read as Parquet: {_arrow_reason(err)}") from None


def ragged_problems(ragged: RaggedRows) -> list[Problem]:
    """Problems for the rows the CSV reader dropped, by record index (pyarrow
    numbers rows by line, the header being line 1)."""
    return [
        (number - 2, "(row)", f"has {cells} cell{'' if cells == 1 else 's'}, the header has {expected}")
        # the rows' record numbers are all known here: a reader on threads that lost one reads again on one
        for number, cells, expected in sorted(cast("list[tuple[int, int, int]]", ragged.rows))
    ]


def check_columns(
    table: pa.Table,
    numbers: Iterable[str],
    offset: int = 0,
    series: bool = True,
    csv: bool = False,
    text: Iterable[str] = (),
) -> Columns:
    """Columns of `table` (pyarrow) checked: `numbers` against their domain, the
    week as an ISO date, the series as text (only with `series`: scoring passes
    it through untouched, and a Python string per row costs more than the
    checks), `text` (categories) as trimmed text that is not empty. Row indexes in problems start at `offset`."""
    values: dict[str, np.ndarray] = {}
    problems: list[Problem] = []
    for name in numbers:
        values[name] = _number_column(table.column(name), name, offset, problems)
    for name in text:
        cells = pc.utf8_trim_whitespace(pc.fill_null(pc.cast(table.column(name), pa.string()), ""))
        array = cells.to_numpy(zero_copy_only=False).astype(object)
        for index in np.flatnonzero(array == "").tolist():
            problems.append((offset + index, name, "is empty"))
        values[name] = array
    if TIME_COLUMN in table.column_names:
        values[TIME_COLUMN] = _week_column(table.column(TIME_COLUMN), offset, problems)
    if series and SERIES_COLUMN in table.column_names:
        # only a CSV's quotes can join lines; a Parquet name may hold a line break as it is
        names = coded_series_names(table, csv, problems, offset)
        values[SERIES_COLUMN] = names.to_numpy(zero_copy_only=False)
    return Columns(values, table.num_rows, problems)


def holds_numbers(column: pa.ChunkedArray) -> bool:
    """Whether a column's cells are numbers (or empty): a static covariate of text is a category."""
    if pa.types.is_boolean(column.type):
        return True  # refused by the number check, naming the cell, rather than read as a category
    try:
        pc.cast(column, pa.float64())
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def series_names(table: pa.Table) -> pa.ChunkedArray:
    """The series column of `table` as trimmed text (pyarrow), a null as blank; a DataError
    when the column cannot be text (a Parquet column of lists, or bytes that are not UTF-8)."""
    return _name_text(table.column(SERIES_COLUMN))


def coded_series_names(table: pa.Table, csv: bool, problems: list[Problem], offset: int = 0) -> pa.DictionaryArray:
    """series_names of `table` coded by distinct name, each name trimmed, and checked for line breaks
    (joined_lines, only in a CSV), once rather than on every row; names that trim alike share a code. Row
    indexes in problems start at `offset`."""
    column = table.column(SERIES_COLUMN).combine_chunks()
    if not (pa.types.is_dictionary(column.type) or pa.types.is_string(column.type)):
        column = _name_text(column)  # numbers or bytes as text, or the DataError naming the column
    coded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column, null_encoding="encode")
    # A null row of a coded column: the blank name, at an index its own type may not reach (int8: 128 names).
    codes = pc.fill_null(pc.cast(coded.indices, pa.int32()), len(coded.dictionary))
    distinct = _name_text(pa.concat_arrays([coded.dictionary, pa.nulls(1, coded.dictionary.type)]))
    if csv:
        joined: list[Problem] = []
        joined_lines(distinct, 0, joined)
        if joined:
            reason = {code: text for code, _, text in joined}
            code_of_row = codes.to_numpy(zero_copy_only=False)
            for row in np.flatnonzero(np.isin(code_of_row, list(reason))).tolist():
                problems.append((offset + row, SERIES_COLUMN, reason[int(code_of_row[row])]))
    merged = pc.dictionary_encode(distinct)
    return pa.DictionaryArray.from_arrays(pc.take(merged.indices, codes), merged.dictionary)


def _name_text(names: pa.Array | pa.ChunkedArray) -> Any:
    """Series names as trimmed text, a null as blank (series_names)."""
    if not pa.types.is_string(names.type):
        try:
            names = pc.cast(names, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise DataError(
                f"column '{SERIES_COLUMN}' of type {names.type} cannot be read as series names: {_arrow_reason(err)}"
            ) from None
    return pc.utf8_trim_whitespace(pc.fill_null(names, ""))


def joined_lines(names: pa.ChunkedArray, offset: int, problems: list[Problem]) -> None:
    """A series name holding a line break is lines of the file read as one cell:
    a stray quote opened it and a later one closed it, and the rows between
    would be lost without a word (unclosed_quote finds a quote left open to the end)."""
    joined = pc.or_(pc.match_substring(names, "\n"), pc.match_substring(names, "\r"))  # half a regex's time
    if pc.any(joined).as_py():
        for index in np.flatnonzero(joined.to_numpy(zero_copy_only=False)).tolist():
            lines = names[index].as_py().replace("\r\n", "\n").replace("\r", "\n").count("\n")
            problems.append(
                (
                    offset + index,
                    SERIES_COLUMN,
                    f"holds {lines} line break(s): a quote opens this cell and another closes it {lines} "
                    "line(s) later, so those lines would be read into this one cell; remove the stray quotes",
                )
            )


def _number_column(column: pa.ChunkedArray, name: str, offset: int, problems: list[Problem]) -> np.ndarray:
    low, high, _ = domain_of(name)
    if pa.types.is_boolean(column.type):  # refused as anywhere else, not read as 0 and 1
        return _numbers_cell_by_cell(column, name, offset, problems)
    try:
        numbers = column if pa.types.is_floating(column.type) else pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _numbers_cell_by_cell(column, name, offset, problems)
    empty = numbers.is_null().to_numpy(zero_copy_only=False) if numbers.null_count else None
    array = numbers.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    inside = (array >= low) & (array <= high)  # NaN and nulls fail both
    if not inside.all():
        for index in np.flatnonzero(~inside).tolist():
            # outside the domain (or NaN): domain_problem names what is wrong, never None
            problem = "is empty" if empty is not None and empty[index] else domain_problem(name, float(array[index]))
            problems.append((offset + index, name, cast(str, problem)))
    return array


def parse_number(text: str) -> float | str:
    """A cell's text as Python reads a number, or the text itself for domain_problem to name."""
    try:
        return float(text)
    except ValueError:
        return text


def _numbers_cell_by_cell(column: pa.ChunkedArray, name: str, offset: int, problems: list[Problem]) -> np.ndarray:
    array = np.full(len(column), np.nan)
    for index, cell in enumerate(column.to_pylist()):
        if isinstance(cell, str):
            cell = cell.strip()
            cell = parse_number(cell) if cell else None
        if cell is None:
            problems.append((offset + index, name, "is empty"))
            continue
        problem = domain_problem(name, cell)
        if problem:
            problems.append((offset + index, name, problem))
        else:
            array[index] = float(cell)
    return array


def _week_column(column: pa.ChunkedArray, offset: int, problems: list[Problem]) -> np.ndarray:
    if pa.types.is_integer(column.type):
        # As the text it would be in a CSV (20240101), whatever the integer's
        # width: a cast would read an int32 as days since 1970.
        column = pc.cast(column, pa.string())
    try:
        weeks = pc.cast(column, pa.date32())  # strict YYYY-MM-DD text, dates and timestamps
        if weeks.null_count:
            raise pa.ArrowInvalid("empty weeks")
        return weeks.to_numpy(zero_copy_only=False).astype("datetime64[D]")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out = np.full(len(column), np.datetime64("NaT"), dtype="datetime64[D]")
    for index, cell in enumerate(column.to_pylist()):
        if isinstance(cell, dt.datetime):
            cell = cell.date()
        if isinstance(cell, dt.date):
            out[index] = cell
            continue
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            problems.append((offset + index, TIME_COLUMN, "is empty"))
            continue
        text = (cell or "").strip() if isinstance(cell, str) or cell is None else str(cell)
        try:
            out[index] = dt.date.fromisoformat(text)
        except ValueError:
            problems.append((offset + index, TIME_COLUMN, f"must be an ISO date like 2024-01-01, got {text!r}"))
    return out


SHOWN_ERRORS = 5  # bad rows named in a refusal; the rest are counted


class ProblemTally:
    """The bad rows of a file, however many: the first SHOWN_ERRORS problems
    in row order, how many rows were bad, and how often each reason came up.
    Memory stays flat when a 10M-row file is bad on every row."""

    first: list[Problem]
    problems: int
    bad_rows: int
    reasons: Counter[str]

    def __init__(self, theirs: Mapping[str, str] | None = None) -> None:
        """`theirs`: the file's own names of columns read under ours (file_names), which its problems name."""
        self.first, self.problems, self.bad_rows, self.reasons = [], 0, 0, Counter()
        self.theirs = dict(theirs or {})

    def add(self, problems: Sequence[Problem]) -> None:
        """Problems (row index, column, problem) of one chunk; chunks come in row order."""
        if not problems:
            return
        if self.theirs:
            problems = [(index, self.theirs.get(column, column), problem) for index, column, problem in problems]
        self.problems += len(problems)
        self.bad_rows += len({index for index, _, _ in problems})
        self.reasons.update(f"{column}: {problem.split(', got')[0]}" for _, column, problem in problems)
        self.first = sorted(self.first + sorted(problems, key=lambda p: p[0])[:SHOWN_ERRORS], key=lambda p: p[0])[
            :SHOWN_ERRORS
        ]

    def lines(self, label: Callable[[int], str]) -> list[str]:
        """The shown problems, one line each, `label` naming a row index ("line 3", "row 2")."""
        return [f"{label(index)}, column {column!r}: {problem}" for index, column, problem in self.first]

    def report(
        self,
        path: str | os.PathLike[str],
        label: Callable[[int], str],
        skip_bad_rows: bool,
        warn: Callable[[str], None] | None = None,
    ) -> tuple[int, dict[str, int]]:
        """Refuse the file, naming the first bad rows, or when they are skipped
        warn with their reasons. Returns (bad rows, {reason: count})."""
        if self.bad_rows and not skip_bad_rows:
            shown = "\n".join(f"  {path}: {line}" for line in self.lines(label))
            more = self.problems - len(self.first)
            raise DataError(
                f"{path}: {self.bad_rows} bad row(s), file refused (use --skip-bad-rows to drop them):"
                f"\n{shown}" + (f"\n  ... and {more} more" if more else "")
            )
        if self.bad_rows and warn:
            reasons = "; ".join(f"{reason} ({count})" for reason, count in self.reasons.most_common())
            warn(f"{path}: skipped {self.bad_rows} bad row(s): {reasons}")
        return self.bad_rows, dict(self.reasons)


def _arrow_reason(err: BaseException) -> str:
    return str(err).splitlines()[0][:200]


def kept_records(kept_before: int, dropped: Sequence[int]) -> Callable[[int], int]:
    """index -> record index of the rows of a chunk whose first row is the
    `kept_before`-th row kept, when the reader has dropped the records
    `dropped` (sorted; drops after the chunk may be among them: the parser
    reads ahead)."""
    if not dropped:
        return lambda index: kept_before + index
    # A drop is before kept row g exactly when fewer than g + 1 rows were kept before it.
    kept_before_drop = np.asarray(dropped) - np.arange(len(dropped))
    return lambda index: int(kept_before + index + np.searchsorted(kept_before_drop, kept_before + index, "right"))


def all_problems(checked: Columns, dropped: list[Problem]) -> list[Problem]:
    """The problems of a whole table by record index: its checked cells' and
    the rows the reader dropped, which still count in the lines after them."""
    record_of = kept_records(0, [index for index, _, _ in dropped])
    return dropped + [(record_of(index), column, problem) for index, column, problem in checked.problems]


class ReadAgain(Exception):
    """A streamed file must be read again from the start with other settings:
    on one thread, which knows the line of a row with the wrong number of
    cells; or as text, when a cell is not a number and must be named."""

    def __init__(self, **settings: bool) -> None:
        super().__init__(settings)
        self.settings = settings


def stream(
    path: str | os.PathLike[str],
    required: Sequence[str],
    threads: bool = True,
    numbers: bool = True,
    renames: Mapping[str, str] | None = None,
    columns: Sequence[str] | None = None,
) -> Iterator[tuple[pa.Table, list[Problem], Callable[[int], int]]]:
    """Chunks of a CSV or Parquet file, each as (pyarrow Table of every column,
    or of `columns` only, problems of rows the reader dropped, kept_records() of the chunk).

    A CSV's `required` columns are parsed as numbers (with `numbers`), the
    others come as text and are passed through verbatim; a row with the wrong
    number of cells is dropped by the reader and named by its line. Raises
    ReadAgain when the settings cannot name what is wrong. `renames` {the
    file's name: ours} as read_csv_table takes it; `required` and `columns` are our names.
    """
    if is_parquet(path):
        parquet, header = open_parquet(path, path, required, renames)
        wanted = header if columns is None else [name for name in header if name in columns]
        by_name = dict(zip(header, parquet.schema_arrow.names))
        kept = 0
        try:
            for batch in parquet.iter_batches(batch_size=STREAM_CHUNK_ROWS, columns=[by_name[n] for n in wanted]):
                table = pa.Table.from_batches([batch]).rename_columns(wanted)
                yield table, [], kept_records(kept, [])
                kept += table.num_rows
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: cannot be read as Parquet: {_arrow_reason(err)}") from None
        return
    try:
        with open(path, "rb") as handle:
            line = header_line(handle.read)
            original = csv_header(line, path)
            header = renamed(original, renames, path)
            handle.seek(len(line))
            header_only = not handle.read(3).strip(b"\r\n")  # nothing after it but its line break
    except OSError as err:
        raise DataError(f"{path}: cannot read the file: {err.strerror}") from None
    require_columns(header, required, path, renames, original)
    if header_only:
        return  # no rows (pyarrow would refuse to skip a header with no line break after it)
    ragged = RaggedRows()
    wanted = header if columns is None else [name for name in header if name in columns]
    options = csv_options(header, wanted, ragged, required if numbers else (), threads, STREAM_BLOCK_BYTES)
    kept = 0
    dropped: list[int] = []
    try:
        reader = pa_csv.open_csv(path, **options)
        for batch in reader:
            if any(number is None for number, _, _ in ragged.rows):
                raise ReadAgain(threads=False)
            problems = ragged_problems(ragged)
            dropped += [index for index, _, _ in problems]
            ragged.rows.clear()
            yield pa.Table.from_batches([batch]), problems, kept_records(kept, dropped)
            kept += batch.num_rows
        if ragged.rows:  # rows dropped after the last batch, or in a file with no good row at all
            if any(number is None for number, _, _ in ragged.rows):
                raise ReadAgain(threads=False)
            problems = ragged_problems(ragged)
            dropped += [index for index, _, _ in problems]
            ragged.rows.clear()
            yield reader.schema.empty_table(), problems, kept_records(kept, dropped)
    except pa.ArrowInvalid as err:
        if numbers:
            raise ReadAgain(numbers=False) from None
        raise DataError(f"{path}: cannot be read as CSV: {_arrow_reason(err)}") from None
    # Once every chunk is out (with read-ahead, while the last is forecast), and
    # before the output is put in place: a never-closed quote refuses the file.
    problem = unclosed_quote(lambda: file_blocks(path), kept + len(dropped) + 1)
    if problem:
        raise DataError(f"{path}: {problem}")
