"""Writing files safely: the files of one export written together or not at all.

Every file is written one way: into a hidden partial file beside its target, then
renamed over it, all files of one export together or none. A symlink is written
through (its target is replaced), a device, FIFO or directory is refused, and an
OSError becomes one line naming the file, with nothing left behind.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from evoinstruct.store.errors import EvoError, InputError

_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)
# Errors that name a problem with the path the user gave (exit 2); anything else, a full
# disk first of all, is the machine's (exit 1).
_PATH_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EISDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EEXIST,
    }
)
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")


def _errno_of(exc: OSError) -> int | None:
    """The errno, also of pyarrow's IO errors, which carry it only in their text."""
    if exc.errno is not None:
        return exc.errno
    found = _ERRNO_IN_TEXT.search(str(exc))
    return int(found.group(1)) if found else None


def _os_error(exc: OSError, shown: str, flag: str | None) -> EvoError:
    number = _errno_of(exc)
    reason = os.strerror(number) if number is not None else " ".join(str(exc).split())
    if number == errno.ENOENT:
        reason = "no such directory (or the file system does not allow creating files here)"
    if number in _PATH_ERRNOS:
        return InputError(f"cannot write here: {reason}", file=shown, field=flag)
    return EvoError(f"{shown}: writing failed: {reason}; nothing was written")


class OutputFiles:
    """The files of one export, written together or not at all.

    Each file goes to a hidden partial file beside its target (`.NAME.<random>.partial`,
    created exclusively, so a planted link is never followed); `commit` renames every
    partial over its target. Leaving the block by an exception removes the partials
    and the directories made for them; an OSError leaves it as one InputError (the path
    given is the problem) or EvoError (the machine is: a full disk).
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []
        self._made: list[Path] = []
        self._current: tuple[str, str | None] = ("", "-o")

    def __enter__(self) -> OutputFiles:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self.commit()
            except OSError as failed:
                self.abort()
                raise _os_error(failed, *self._current) from None
            return
        self.abort()
        if isinstance(exc, OSError):
            raise _os_error(exc, *self._current) from None

    def target(self, path: Path, flag: str | None = "-o") -> Path:
        """The file `path` names: itself, or the file its symlink points at; only a regular
        file (or none yet) may be replaced. `flag` is the option that named it (None: a file
        written beside the data)."""
        self._current = (str(path), flag)
        target = Path(os.path.realpath(path)) if path.is_symlink() else path
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            return target
        for test, what in _NOT_REGULAR:
            if test(mode):
                through = f" (its link points at {target})" if target != path else ""
                todo = "name a file to write" if flag else "move it away, or pass --no-card"
                raise InputError(
                    f"is {what}{through}, not a regular file; {todo}", file=str(path), field=flag
                )
        return target

    def make_parents(self, path: Path, flag: str | None = "-o") -> None:
        """Create `path`'s missing directories, remembered so a failure removes them again."""
        self._current = (str(path), flag)
        missing: list[Path] = []
        directory = path.parent
        while not directory.exists() and not directory.is_symlink():
            missing.append(directory)
            if directory.parent == directory:
                break
            directory = directory.parent
        for directory in reversed(missing):
            directory.mkdir()
            self._made.append(directory)

    @contextmanager
    def open(
        self, path: Path, *, binary: bool = False, flag: str | None = "-o"
    ) -> Iterator[IO[Any]]:
        """A file to write `path`'s new content into; it replaces `path` at `commit`."""
        target = self.target(path, flag)
        if any(staged == target for staged, _ in self._staged):
            raise InputError(
                "is written twice by this export (a link points at another output)",
                file=str(path),
                field=flag,
            )
        try:
            keep_mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            keep_mode = None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        while True:
            partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
            try:
                fd = os.open(partial, flags, 0o666)
                break
            except FileExistsError:
                continue
        self._staged.append((target, partial))
        if keep_mode is not None:  # replacing a file keeps its permissions
            os.fchmod(fd, keep_mode)
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            # A rename without fsync can leave an empty file after a power cut; a full disk
            # often shows only here.
            os.fsync(fh.fileno())
        self._current = (str(path), flag)

    def write_text(self, path: Path, text: str, flag: str | None = "-o") -> None:
        with self.open(path, flag=flag) as fh:
            fh.write(text)

    def commit(self) -> None:
        for target, partial in self._staged:
            self._current = (str(target), self._current[1])
            os.replace(partial, target)
        self._staged.clear()
        self._made.clear()

    def abort(self) -> None:
        for _, partial in self._staged:
            with suppress(OSError):
                partial.unlink(missing_ok=True)
        self._staged.clear()
        for directory in reversed(self._made):
            with suppress(OSError):
                directory.rmdir()
        self._made.clear()
