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


# ---------------------------------------------------------------- rawtext.gunzip_pieces: inflating in pieces

def _members(*texts: bytes) -> bytes:
    import gzip
    return b"".join(gzip.compress(t, compresslevel=1) for t in texts)


TEXT = b"".join(b'2026-11-23T10:00:00.000Z {"id": "%d"}\n' % i for i in range(20_000))  # ~750 KB, ~30:1 in gzip


@pytest.mark.parametrize("data, damage", [
    (_members(TEXT), None),
    (_members(TEXT[:1000], TEXT[1000:400_000], TEXT[400_000:]), None),  # Firehose: a member per record batch
    (_members(TEXT) + b"\x00" * 64, None),  # a writer's zero padding after the last member
    (_members(TEXT)[:-30], "truncated gzip stream"),
    (_members(TEXT[:300_000]) + b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 20, "corrupt gzip data"),
])
@pytest.mark.parametrize("size", [None, 1, 4096, 100_000])
def test_gunzip_in_pieces_gives_what_gunzip_gives_a_piece_at_a_time(data, damage, size):
    """Pieces of `size` bytes (the last shorter), joined, are gunzip's text; only the last carries the damage. (Of a
    member cut short, ISA-L may give a few more bytes a piece at a time: the lines before the cut are the same.)"""
    whole, whole_damage = rawtext.gunzip(data)
    pieces = list(rawtext.gunzip_pieces(data, size))
    joined = b"".join(p for p, _ in pieces)
    if whole_damage:
        joined, whole = (t[:t.rfind(b"\n") + 1] for t in (joined, whole))
    assert joined == whole and len(whole) > 250_000
    assert [d for _, d in pieces[:-1]] == [None] * (len(pieces) - 1)
    assert pieces[-1][1] == whole_damage and (damage is None) == (whole_damage is None)
    assert damage is None or whole_damage.startswith(damage)
    if size:
        assert all(len(p) == size for p, _ in pieces[:-1]) and len(pieces[-1][0]) <= size
        assert len(pieces) >= len(whole) // size
    else:
        assert len(pieces) == 1


def test_a_piece_stays_within_its_size_however_well_the_text_compresses():
    """Text that compresses a thousand to one still comes in pieces of `size`: the bound is on the text, not on the
    compressed input handed over."""
    data = _members(b"x" * 40_000_000)
    assert len(data) < 200_000
    sizes = [len(p) for p, _ in rawtext.gunzip_pieces(data, 1 << 20)]
    assert max(sizes) == 1 << 20 and sum(sizes) == 40_000_000


def test_plain_data_comes_in_pieces_too():
    assert [p for p, _ in rawtext.gunzip_pieces(b"abcdefg", 3)] == [b"abc", b"def", b"g"]
    assert list(rawtext.gunzip_pieces(b"")) == [(b"", None)]
