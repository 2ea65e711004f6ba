"""How glassbox writes a folder: whole or not at all, only where it may, with the
modes the user's umask gives.

    write_output_dir(target, write, Output("glassbox export --to hf"), inputs=[ckpt])

`write(tmp)` fills a fresh folder beside `target`, which is then renamed into place
(`atomic_write_dir`): a crash or a full disk leaves the old folder or the new one,
never half of one. Before anything is written, `claim_output_dir` refuses, in one
OutputError line naming the path and what to do, a target that

- is a file (a file is never replaced by a folder), or a link;
- is, or holds, one of the command's inputs (the checkpoint it reads);
- lies inside a protected folder (the shipped checkpoints, which `glassbox ship`
  alone writes);
- cannot be written by this user;
- holds files the command did not write. With force those are kept and only the
  command's own files replaced.

A folder the command made before is known by its marker, MARKER (JSON: the command
and the names it wrote), or, for folders written before the marker existed, by the
command's `legacy` test. Files and folders get 0o666 / 0o777 less the umask
(tempfile makes them 0o600 / 0o700, unreadable to a teammate or a web server).
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from glassbox.archs.errors import GlassboxError

MARKER = ".glassbox"  # in every folder a command wrote: {"written_by": ..., "files": [...]}
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # EFBIG: a file-size limit (ulimit -f)


class OutputError(GlassboxError):
    """A place a command will not write, or could not: one line, the path, what is
    wrong and what to do."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Output:
    """What one command writes. command: its name in messages ("glassbox export --to
    hf"); legacy: a test that a folder without the marker was written by it (before
    the marker existed, or with marker=False), whose entries matching `owns` are then
    its own."""

    command: str
    legacy: Callable[[Path], bool] | None = None
    owns: tuple[str, ...] = ("*",)
    marker: bool = True  # False: known by `legacy` alone (a folder whose files are a format)
    force: bool = True  # the command takes --force (said in the refusal)


# --- modes and a full disk -----------------------------------------------------------


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give `root` and everything under it the modes a plain mkdir or open gives:
    0o777 (folders, executables) or 0o666 (other files), less the umask."""
    mask = current_umask()
    for p in [root, *root.rglob("*")]:
        if p.is_symlink():
            continue
        full = 0o777 if p.is_dir() or os.stat(p).st_mode & 0o111 else 0o666
        os.chmod(p, full & ~mask)


def _existing(path: Path) -> Path:
    """`path` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def is_disk_full(e: BaseException | None) -> bool:
    """An OSError of a full disk or a size limit, or a library's wrapping of one
    (safetensors says "I/O error: ... (os error 28)"; torch.save raises a RuntimeError
    while handling the OSError)."""
    if e is None:
        return False
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        return True
    found = re.search(r"\(os error (\d+)\)", str(e))
    if found is not None and int(found.group(1)) in DISK_FULL:
        return True
    return is_disk_full(e.__cause__ or e.__context__)


def disk_full(
    path: str | Path, e: BaseException, cleaned: str = "nothing was kept there"
) -> OutputError:
    """The one line of a write that ran out of room (ENOSPC, a quota, or a file-size
    limit): the path, the free space on its disk, and what to do."""
    where = _existing(Path(path))
    try:
        free = f"{_size(shutil.disk_usage(where).free)} free on {where}"
    except OSError:
        free = f"free space on {where} unknown"
    limit = getattr(e, "errno", None) == errno.EFBIG or "(os error 27)" in str(e)
    why = "a file grew past this process's size limit (ulimit -f)" if limit else "the disk is full"
    return OutputError(
        path, f"{why}; {free}; {cleaned}: free some space (or write elsewhere) and run it again"
    )


# --- atomic folders ------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fill(tmp: Path, write) -> None:
    """write(tmp), then the umask's modes and everything synced to disk; tmp removed
    if any of it fails."""
    try:
        write(tmp)
        apply_umask(tmp)
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_dir(target: str | Path, write) -> Path:
    """Call write(tmp_dir) to fill a fresh directory, then move it to `target`,
    replacing what was there only once the new one is complete. Files and folders
    get the umask's modes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    _fill(tmp, write)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
    os.rename(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def clean_interrupted_writes(target: str | Path) -> list[Path]:
    """Tidy what an `atomic_write_dir(target, ...)` killed midway left beside `target`:
    an unfinished `.<name>.tmp-*` is removed; a `.<name>.old-*` (the previous
    checkpoint, moved aside just before the new one was renamed in) is removed when
    `target` exists, and renamed back to `target` when it does not. Returns the
    paths removed or restored."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    touched = []
    for tmp in sorted(target.parent.glob(f".{target.name}.tmp-*")):
        shutil.rmtree(tmp, ignore_errors=True)
        touched.append(tmp)
    olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not target.exists():
        os.rename(olds.pop(), target)
        touched.append(target)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)
        touched.append(old)
    return touched


def replace_entries(target: Path, write) -> Path:
    """Fill a fresh folder beside `target` with write(tmp), then move each of its
    entries into `target` (each replaced whole, by rename), keeping every other entry
    of `target`. What --force does to a folder that holds files of the user's."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    _fill(tmp, write)
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    try:
        for entry in sorted(tmp.iterdir()):
            if (target / entry.name).exists() or (target / entry.name).is_symlink():
                os.rename(target / entry.name, old / entry.name)
            os.rename(entry, target / entry.name)
        _fsync_dir(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


# --- where a command may write -------------------------------------------------------


def read_marker(folder: Path) -> dict | None:
    """The marker a command left in `folder` ({"written_by", "files"}), or None."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(marker, dict) and isinstance(marker.get("files"), list):
        return marker
    return None


def write_marker(folder: Path, output: Output, files: Iterable[str]) -> None:
    names = sorted(n for n in files if n != MARKER)
    text = json.dumps({"written_by": output.command, "files": names}, indent=1) + "\n"
    (folder / MARKER).write_text(text)


def foreign_entries(folder: Path, output: Output) -> list[str]:
    """The entries of `folder` that `output`'s command did not write."""
    names = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
    if not output.marker:  # known by what it writes alone
        if output.legacy is not None and output.legacy(folder):
            return [n for n in names if not any(fnmatch.fnmatch(n, g) for g in output.owns)]
        return names
    marker = read_marker(folder)
    if marker is not None and marker.get("written_by") == output.command:
        return [n for n in names if n not in marker["files"]]
    if marker is None and output.legacy is not None and output.legacy(folder):
        return [n for n in names if not any(fnmatch.fnmatch(n, g) for g in output.owns)]
    return names


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def _check_spares_checkpoints(
    target: Path, output: Output, inputs: Iterable[str | Path], protected: Iterable[str | Path]
) -> None:
    """OutputError if `target` is or holds a checkpoint the command reads (`inputs`),
    or lies inside the shipped checkpoints (`protected`)."""
    real = Path(os.path.realpath(target))
    for inp in inputs:
        source = Path(os.path.realpath(inp))
        if _inside(source, real):
            held = "is" if source == real else f"holds {inp}, which is"
            raise OutputError(
                target,
                f"{held} the checkpoint {output.command} reads: writing there would destroy "
                "it; name another folder",
            )
    for root in protected:
        if _inside(real, Path(os.path.realpath(root))):
            raise OutputError(
                target,
                f"is inside {root}, the shipped checkpoints, which only `glassbox ship` "
                f"writes; name a folder elsewhere, e.g. ./{target.name}",
            )


def claim_output_dir(
    target: str | Path,
    output: Output,
    inputs: Iterable[str | Path] = (),
    protected: Iterable[str | Path] = (),
    force: bool = False,
) -> list[str]:
    """Check that `output`'s command may write the folder `target` (module docstring);
    OutputError (one line) if not. Returns the entries of the user's it must keep
    (only with force)."""
    target = Path(target)
    _check_spares_checkpoints(target, output, inputs, protected)
    if target.is_symlink():
        raise OutputError(target, "is a link: name the folder itself, or a new one")
    parent = _existing(target.parent)
    if not parent.is_dir():
        raise OutputError(target, f"{parent} is a file, not a folder: name a folder path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            target,
            f"cannot be written: {parent} is read-only for this user; name a folder you can write",
        )
    if not target.exists():
        return []
    if not target.is_dir():
        raise OutputError(
            target,
            "is a file, not a folder: name a new or empty folder (glassbox never replaces "
            "a file with a folder)",
        )
    if not os.access(target, os.W_OK | os.X_OK):
        raise OutputError(target, "is read-only for this user; name a folder you can write")
    foreign = foreign_entries(target, output)
    if foreign and not force:
        raise OutputError(
            target,
            f"holds files {output.command} did not write ({_listed(foreign)}): name a new or "
            "empty folder"
            + (
                f", or pass --force to replace only what {output.command} writes there (the "
                "rest is kept)"
                if output.force
                else ""
            ),
        )
    return foreign


def write_output_dir(
    target: str | Path,
    write,
    output: Output,
    inputs: Iterable[str | Path] = (),
    protected: Iterable[str | Path] = (),
    force: bool = False,
) -> Path:
    """Check `target` (claim_output_dir), then fill it with write(tmp) whole or not
    at all, with `output`'s marker beside what it wrote. A folder of the command's
    own is replaced whole; with force, a folder holding the user's files keeps them
    and only the command's entries are replaced. A full disk is one OutputError
    (the path, the free space) with nothing of the new folder left. Returns target."""
    target = Path(target)
    keep = claim_output_dir(target, output, inputs, protected, force)

    def marked(tmp: Path) -> None:
        write(tmp)
        if output.marker:
            write_marker(tmp, output, (p.name for p in tmp.iterdir()))

    try:
        if keep:
            return replace_entries(target, marked)
        return atomic_write_dir(target, marked)
    except Exception as e:
        if is_disk_full(e):
            raise disk_full(target, e) from None
        raise


def open_output_dir(
    target: str | Path,
    output: Output,
    inputs: Iterable[str | Path] = (),
    protected: Iterable[str | Path] = (),
    force: bool = False,
) -> list[str]:
    """For a command whose code fills its folder in place (analysis plots): check
    `target` (claim_output_dir), make it and mark it as the command's. Returns the
    user's entries it keeps (with force); hand them to close_output_dir when done, so
    that the marker lists what the command wrote."""
    target = Path(target)
    keep = claim_output_dir(target, output, inputs, protected, force)
    target.mkdir(parents=True, exist_ok=True)
    close_output_dir(target, output, keep)
    return keep


def close_output_dir(target: str | Path, output: Output, keep: list[str]) -> None:
    """Mark every entry of `target` but the user's `keep` as written by `output` (a
    command known by what it writes leaves no marker)."""
    target = Path(target)
    if not output.marker:
        return
    write_marker(target, output, (p.name for p in target.iterdir() if p.name not in keep))
