"""Following an endpoint's worker logs by byte offsets, as `flash logs --follow` does through
the control API: each read returns the lines written since the previous one, and a cursor
({log file name: offset}) to continue from, so a browser that reconnects misses nothing."""

from __future__ import annotations

from pathlib import Path

MAX_READ_BYTES = 256 * 1024  # per file and read: a flood of output arrives over several reads


def read_new_lines(folder: Path, cursor: dict[str, int], tail: int | None
                   ) -> tuple[list[str], dict[str, int]]:
    """Lines after `cursor` in the folder's `*.log` files (oldest file first), each prefixed
    with its worker id, and the cursor after them. With `tail`, only the last `tail` lines
    of what is there are returned (a first read)."""
    try:
        files = sorted(folder.glob("*.log"), key=lambda path: path.stat().st_mtime)
    except OSError:  # a log removed meanwhile
        return [], cursor
    lines, after = [], dict(cursor)
    for path in files:
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, 2)
                start = cursor.get(path.name, 0 if tail is None else
                                   max(0, size - MAX_READ_BYTES))  # a tail: only the end
                if start > size:  # truncated by log rotation: its lines begin at the top
                    start = 0
                handle.seek(start)
                data = handle.read(MAX_READ_BYTES)
        except OSError:
            continue
        data = data[:data.rfind(b"\n") + 1]  # a half-written line waits for its end
        after[path.name] = start + len(data)
        lines.extend(f"[{path.stem}] {line}"
                     for line in data.decode(errors="replace").splitlines())
    return (lines[max(0, len(lines) - tail):] if tail is not None else lines), after
