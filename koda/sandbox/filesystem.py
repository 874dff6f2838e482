"""The sandbox's file system: a minimal read-only root plus one private writable /tmp.

Rather than remounting the host's ``/`` read-only (which still lets a solution *read* every
world-readable file, such as a data set's test cases sitting in a repository), the run gets a
fresh root holding only what Python and ordinary programs need: ``/usr``, ``/etc``, ``/dev``
(non-recursive, so the host's ``/dev/shm`` is not there), the interpreter's prefixes, and the
merged-usr links ``/bin``, ``/lib``... Everything is bind-mounted read-only, the root itself is
remounted read-only after ``pivot_root``, and the old root is detached, so no path leads back
to the host file system. ``/tmp`` is a size-capped tmpfs owned by the solver: it is the working
directory, and it vanishes with the mount namespace when the run ends, with nothing to clean up.

All of this runs as host root inside the new mount namespace before the user namespace is
entered, so the mounts belong to the host's user namespace and cannot be undone from inside.
"""

from __future__ import annotations

import ctypes
import os
import sys

from koda.sandbox import namespaces, syscalls
from koda.sandbox.namespaces import LayerError

# Where the new root is assembled (a tmpfs mounted over an existing host directory, visible only
# in the private mount namespace), and the working directory inside: the first candidates that
# hold none of the shown host paths (a CI checkout with its virtualenv may sit under /tmp).
_STAGING_CANDIDATES = ("/tmp", "/mnt", "/media", "/srv", "/opt", "/var/tmp", "/run")
_WORKDIR_CANDIDATES = ("/tmp", "/sandbox")
_workdir = "/tmp"  # set by enter_minimal_root; judges are forks of the zygote and inherit it
_ALWAYS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_MNT_DETACH = 2
_RO_BIND = syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY
_PROC_FLAGS = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


def host_paths() -> list[str]:
    """Host directories visible (read-only) inside the sandbox; nested ones are dropped."""
    wanted = list(_ALWAYS) + [sys.prefix, sys.base_prefix, sys.exec_prefix,
                              os.path.dirname(os.path.realpath(sys.executable))]
    paths: list[str] = []
    for p in sorted({os.path.normpath(p) for p in wanted if os.path.lexists(p)}, key=len):
        if not any(p == q or p.startswith(q + "/") for q in paths if not os.path.islink(q)):
            paths.append(p)
    return paths


def _free(candidates: tuple[str, ...], paths: list[str], must_exist: bool) -> str:
    for c in candidates:
        if (os.path.isdir(c) or not must_exist) and not any(p == c or p.startswith(c + "/") for p in paths):
            return c
    raise OSError(0, f"no free directory among {candidates} for the sandbox root")


def workdir_for(paths: list[str]) -> str:
    """The working directory inside the sandbox: /tmp, unless a shown host path lies there."""
    return _free(_WORKDIR_CANDIDATES, paths, must_exist=False)


def build_root(layers: frozenset[str] | set[str], tmpfs_mb: int, owner: int | None = None,
               paths: list[str] | None = None) -> str | None:
    """Both steps below in one process (the layer probe does this); returns the working dir."""
    if "mount_namespace" not in layers or "readonly_root" not in layers:
        return None
    enter_minimal_root(host_paths() if paths is None else paths)
    return private_mounts(layers, tmpfs_mb, owner)


def enter_minimal_root(paths: list[str]) -> None:
    """Once per zygote: move into a new mount namespace whose root is the minimal read-only tree.

    Every judge then starts from it (``private_mounts``), so the binds, the ``pivot_root`` and
    the detaching of the host's mount tree are paid once per zygote, not once per run. The
    zygote keeps a ``/proc`` of the host's PID namespace (it writes its judges' id maps there);
    each judge covers it with its own.

    ``paths`` are the host directories to show, computed by the pool (``host_paths()``) because
    the zygote runs without ``site`` and so does not know the user's virtual environment.
    """
    global _workdir
    namespaces.unshare_layer("mount_namespace", syscalls.CLONE_NEWNS)
    try:
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)  # nothing leaks to the host
        staging = _free(_STAGING_CANDIDATES, paths, must_exist=True)
        _workdir = workdir_for(paths)
        syscalls.mount("tmpfs", staging, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=1m,mode=0755")
        for path in paths:
            _add(staging, path)
        _add(staging, "/dev", dev=True)
        os.mkdir(staging + "/proc", 0o555)
        syscalls.mount("proc", staging + "/proc", "proc", _PROC_FLAGS)
        os.makedirs(staging + _workdir, 0o755, exist_ok=True)
        _pivot(staging)
        syscalls.mount(None, "/", None, syscalls.MS_REMOUNT | syscalls.MS_RDONLY | syscalls.MS_NOSUID
                       | syscalls.MS_NODEV)
    except OSError as err:
        raise LayerError("readonly_root", str(err)) from None


def private_mounts(layers: frozenset[str] | set[str], tmpfs_mb: int, owner: int | None) -> str:
    """Per judge: a mount namespace of its own on the minimal root, with its /proc and /tmp.

    ``owner`` is the host uid that gets the writable /tmp.
    """
    namespaces.unshare_layer("mount_namespace", syscalls.CLONE_NEWNS)
    try:
        if "pid_namespace" in layers:
            syscalls.mount("proc", "/proc", "proc", _PROC_FLAGS)  # its own PID namespace's view
        opts = f"size={tmpfs_mb}m,mode=0700" + (f",uid={owner},gid={owner}" if owner is not None else "")
        syscalls.mount("tmpfs", _workdir, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, opts)
    except OSError as err:
        raise LayerError("readonly_root", str(err)) from None
    return _workdir


def _add(staging: str, path: str, dev: bool = False) -> None:
    """Mirror one host path into the staging root: symlinks as symlinks, directories as ro binds."""
    target = staging + path
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
        return
    os.makedirs(target, mode=0o755, exist_ok=True)
    syscalls.mount(path, target, None, syscalls.MS_BIND)
    extra = syscalls.MS_NOSUID | (syscalls.MS_NOEXEC if dev else syscalls.MS_NODEV)
    syscalls.mount(None, target, None, _RO_BIND | extra)


def _pivot(new_root: str) -> None:
    """``pivot_root(".", ".")`` then detach the old root: the host tree is then unreachable."""
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(0, f"pivot_root: unsupported machine {os.uname().machine}")
    os.chdir(new_root)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, b".", b".") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    if libc.umount2(b".", _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount old root: {os.strerror(err)}")
    os.chdir("/")

