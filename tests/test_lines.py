"""rawtext.lines: one string per line, as views into the decompressed text."""

import pyarrow as pa
import pytest

from reconcile.sources import rawtext


@pytest.mark.parametrize("text, expected", [
    (b"", []),
    (b"\n", [""]),
    (b"one", ["one"]),
    (b"one\ntwo\n", ["one", "two"]),
    (b"crlf\r\n\r\n\nlast", ["crlf", "", "", "last"]),
    (b"a" * 12 + b"\n" + b"b" * 13 + b"\n" + "é€😀".encode() + b"\n", ["a" * 12, "b" * 13, "é€😀"]),
    (b'2026-11-23T10:00:00.000Z {"id": "x"}\n', ['2026-11-23T10:00:00.000Z {"id": "x"}']),
])
def test_lines(text, expected):
    out = rawtext.lines(text)
    assert out.type == pa.string_view()
    assert out.to_pylist() == expected


def test_bytes_that_are_not_utf8_keep_their_line_number():
    out = rawtext.lines(b'{"ok": 1}\n\xff\xfe broken\n{"ok": 2}\n').to_pylist()
    assert out == ['{"ok": 1}', "\x01\\xff\x01\\xfe broken", '{"ok": 2}']  # escaped, never U+FFFD


def test_text_longer_than_one_buffer_is_cut_at_a_newline():
    text = b"".join(f"line {i:03d} of the object\n".encode() for i in range(100))
    out = rawtext.lines(text, buffer_limit=250)
    assert out.num_chunks > 1
    assert out.to_pylist() == [f"line {i:03d} of the object" for i in range(100)]


def test_export_lines_cut_at_the_first_space():
    text = b'2026-11-23T10:00:00.000Z {"id": "a b"}\nno-space-here\n\n2026-11-23T10:00:01Z x y\n'
    line, stamp, event = (c.to_pylist() for c in rawtext.export_lines(text))
    assert line == ['2026-11-23T10:00:00.000Z {"id": "a b"}', "no-space-here", "", "2026-11-23T10:00:01Z x y"]
    assert stamp == ["2026-11-23T10:00:00.000Z", None, None, "2026-11-23T10:00:01Z"]
    assert event == ['{"id": "a b"}', None, None, "x y"]


def test_export_lines_of_text_that_is_not_utf8():
    line, stamp, event = (c.to_pylist() for c in rawtext.export_lines(b"2026-11-23T10:00:00Z {\xff}\n"))
    assert (line, stamp, event) == (["2026-11-23T10:00:00Z {\x01\\xff}"], ["2026-11-23T10:00:00Z"], ["{\x01\\xff}"])


def test_export_lines_with_other_timestamp_widths():
    text = b"2026-11-23T10:00:00Z a\n2026-11-23T10:00:00.000+00:00 b\n2026-11-23T10:00:00.000Zc d\n"
    line, stamp, event = (c.to_pylist() for c in rawtext.export_lines(text))
    assert stamp == ["2026-11-23T10:00:00Z", "2026-11-23T10:00:00.000+00:00", "2026-11-23T10:00:00.000Zc"]
    assert event == ["a", "b", "d"]
