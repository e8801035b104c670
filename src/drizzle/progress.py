"""A progress bar for long micro-batch loops, shown only where someone is watching.

``progress(total, desc)`` returns a bar drawn by tqdm on standard error when that is a
terminal and tqdm is installed (the ``progress`` extra), and a silent stand-in
otherwise (output piped or redirected, CI, tqdm absent), so scripts call it
unconditionally. ``update`` takes a postfix (e.g. G and overhead) shown beside the
rate; ``write`` prints a line without tearing the bar.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TextIO


class Progress:
    """A bar, or nothing. Use as a context manager, or ``close()`` it."""

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        unit: str = "batch",
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            enabled = _is_terminal(self.stream)
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(
                    total=total,
                    desc=desc,
                    unit=unit,
                    file=self.stream,
                    dynamic_ncols=True,
                    leave=True,
                )

    @property
    def enabled(self) -> bool:
        """Whether a bar is drawn."""
        return self._bar is not None

    def update(self, n: int = 1, **postfix: Any) -> None:
        bar = self._bar
        if bar is None:
            return
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.update(n)  # redraws at most every tqdm's mininterval

    def write(self, line: str, file: TextIO | None = None) -> None:
        """Print ``line`` (to stdout by default) above the bar."""
        out = sys.stdout if file is None else file
        if self._bar is None:
            print(line, file=out)
        else:
            self._bar.write(line, file=out)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def progress(total: int | None, desc: str = "", **options: Any) -> Progress:
    """A ``Progress`` over ``total`` micro-batches (see the module docstring)."""
    return Progress(total, desc, **options)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
