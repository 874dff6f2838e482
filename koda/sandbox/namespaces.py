"""Linux namespaces and the two identities a run uses: the judge and the solver.

A run has two unprivileged identities. The *judge* runs KODA's harness and the tests; the
*solver* runs the untrusted solution. They get different user ids so that the solver cannot
signal, ptrace or read the memory of the judge (all of which need the same uid or a capability
the solver lacks); that is what lets the judge's verdict be trusted (see ``judge.py``).

With the user namespace on, the judge is uid 0 *inside* (it keeps capabilities over its own
namespace, needed to create the solver and kill it) but host uid ``JUDGE_HOST_ID``; the solver is
uid 1000 inside and ``SOLVER_HOST_ID`` outside, with no capabilities anywhere. The ids are not
any real account's, so neither owns a single host file. The mount, PID, network and IPC
namespaces are created first, while still host root, so they belong to the host's user namespace:
nothing inside can later remount, bring up an interface or change what they were set up to be.
"""

from __future__ import annotations

import os

from koda.sandbox import syscalls

JUDGE_HOST_ID = 2_000_000_000
SOLVER_HOST_ID = 2_000_000_001
_INSIDE = {"judge": 0, "solver": 1000}
_HOST = {"judge": JUDGE_HOST_ID, "solver": SOLVER_HOST_ID}

UNSHARE_FLAGS = {
    "mount_namespace": syscalls.CLONE_NEWNS,
    "pid_namespace": syscalls.CLONE_NEWPID,
    "network_namespace": syscalls.CLONE_NEWNET,  # a fresh one holds only a loopback that is down
    "ipc_namespace": syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWUTS,
}


class LayerError(Exception):
    """Setting up one isolation layer failed; ``layer`` names it for the user."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(f"{layer}: {reason}")
        self.layer, self.reason = layer, reason


def unshare_layer(layer: str, flags: int) -> None:
    try:
        syscalls.unshare(flags)
    except OSError as err:
        raise LayerError(layer, str(err)) from None


def unshare_for_run(layers: frozenset[str], skip: tuple[str, ...] = ()) -> None:
    """Enter new PID, network and IPC namespaces (the zygote does this for the judge it forks).

    The mount namespace is the judge's own (``filesystem.build_root``): its ``pivot_root`` moves
    the root of every process in the namespace, and the zygote must keep the host's ``/proc``
    to write the judge's id maps. The user namespace comes last, after the mounts.
    """
    for layer, flags in UNSHARE_FLAGS.items():
        if layer in layers and layer != "mount_namespace" and layer not in skip:
            unshare_layer(layer, flags)


class Home:
    """The zygote's own namespaces, to return to after forking a judge into fresh ones.

    ``unshare`` moves the caller itself into new network/IPC/UTS namespaces (and its future
    children into a new PID namespace); ``setns`` on fds opened at start brings it back. This
    saves the extra process per run that would otherwise do the unsharing and exit.

    The network namespace is made once per zygote and entered by each of its runs in turn:
    creating and (asynchronously, in a kernel worker) destroying one costs more than the rest
    of the namespaces together, and an empty one keeps no state between runs. Its only
    interface, loopback, is down and stays down (configuring it needs CAP_NET_ADMIN in the host's
    user namespace, which nothing inside has); sockets close with the processes of a run, and
    the PID namespace guarantees those are all gone before the next run starts. Runs of
    different zygotes (in parallel) never share one.
    """

    _FILES = {"net": syscalls.CLONE_NEWNET, "ipc": syscalls.CLONE_NEWIPC, "uts": syscalls.CLONE_NEWUTS,
              "pid": syscalls.CLONE_NEWPID}

    def __init__(self) -> None:
        self.fds = {flag: os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                    for name, flag in self._FILES.items()}
        self.sandbox_net: int | None = None

    def fork_into(self, layers: frozenset[str]) -> int:
        """Fork a child inside fresh PID/net/IPC namespaces; the caller stays where it was."""
        entered = {flag for flag in self.fds if any(
            layer in layers and flags & flag for layer, flags in UNSHARE_FLAGS.items())}
        try:
            unshare_for_run(layers, skip=("network_namespace",))
            if "network_namespace" in layers:
                syscalls.setns(self._sandbox_net(), syscalls.CLONE_NEWNET)
            pid = os.fork()
        except BaseException:
            self.go_home(entered)
            raise
        if pid != 0:  # the child stays in the new namespaces
            self.go_home(entered)
        return pid

    def _sandbox_net(self) -> int:
        if self.sandbox_net is None:
            unshare_layer("network_namespace", syscalls.CLONE_NEWNET)
            self.sandbox_net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        return self.sandbox_net

    def go_home(self, entered: set[int] | None = None) -> None:
        """Back to the zygote's namespaces: those in ``entered`` (CLONE_* flags), default all."""
        for flag, fd in self.fds.items():
            if entered is None or flag in entered:
                syscalls.setns(fd, flag)

    def close(self) -> None:
        for fd in [*self.fds.values(), self.sandbox_net]:
            if fd is not None:
                os.close(fd)


def ask_for_user_namespace(to_parent: int, from_parent: int) -> None:
    """Child side: enter a new user namespace and wait until the parent has written its id maps.

    The maps must be written by a process that holds CAP_SETUID in the *parent* namespace
    (only then may they name host ids other than our own), hence the handshake.
    """
    try:
        syscalls.unshare(syscalls.CLONE_NEWUSER)
    except OSError as err:
        os.write(to_parent, b"!")
        raise LayerError("user_namespace", str(err)) from None
    os.write(to_parent, b"u")
    if os.read(from_parent, 1) != b"k":
        raise LayerError("user_namespace", "parent could not write the uid/gid maps")


def grant_user_namespace(pid: int, from_child: int, to_child: int) -> None:
    """Parent side of ``ask_for_user_namespace``; must run as host root."""
    if os.read(from_child, 1) != b"u":
        return
    maps = "".join(f"{_INSIDE[r]} {_HOST[r]} 1\n" for r in ("judge", "solver"))
    try:
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(maps)
    except OSError:
        os.write(to_child, b"!")
        return
    os.write(to_child, b"k")


def become(role: str, layers: frozenset[str]) -> None:
    """Switch to the judge's or the solver's ids; a no-op without judge separation.

    Dropping to a non-zero uid clears every capability (no SECBIT_KEEP_CAPS is set), and
    ``no_new_privs`` stops a setuid binary from giving any back.
    """
    if "judge_separation" not in layers:
        return
    uid = _INSIDE[role] if "user_namespace" in layers else _HOST[role]
    try:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    except OSError as err:
        raise LayerError("judge_separation", f"cannot switch to the {role} uid {uid}: {err}") from None


def solver_owner(layers: frozenset[str]) -> int | None:
    """The id (as seen by the judge) that should own the solver's writable directory."""
    if "judge_separation" not in layers:
        return None
    return _INSIDE["solver"] if "user_namespace" in layers else _HOST["solver"]


def probe_identity(enabled: set[str] | frozenset[str]) -> dict[str, str]:
    """Check the user namespace handshake and the uid switch, each in a throwaway child."""
    missing: dict[str, str] = {}
    if _in_child(lambda: None, user_namespace=True) != 0:
        missing["user_namespace"] = "unshare(CLONE_NEWUSER) or writing its uid/gid maps failed"
    separated = frozenset(enabled) | {"judge_separation"}
    separated = separated | {"user_namespace"} if not missing else separated - {"user_namespace"}
    want = _INSIDE["solver"] if not missing else _HOST["solver"]

    def switch() -> None:
        become("solver", separated)
        if os.getuid() != want:
            raise OSError(f"uid is {os.getuid()}, not {want}")

    if _in_child(switch, user_namespace=not missing) != 0:
        missing["judge_separation"] = f"cannot switch to a separate solver uid ({want})"
    return missing


def probe_return_home() -> dict[str, str]:
    """The zygote must get back to its own namespaces after forking each judge into new ones.

    Run before anything else is unshared: it needs CAP_SYS_ADMIN over the namespaces the
    process starts in, which a process that is root only inside a user namespace lacks.
    """
    def there_and_back() -> None:
        home = Home()
        unshare_layer("network_namespace", syscalls.CLONE_NEWNET)
        home.go_home()

    if _in_child(there_and_back) == 0:
        return {}
    reason = "cannot return to the zygote's own namespaces (setns not permitted)"
    return dict.fromkeys(("pid_namespace", "network_namespace", "ipc_namespace"), reason)


def _in_child(check, user_namespace: bool = False) -> int:
    """Run ``check`` in a forked child (after the user namespace handshake if asked); its exit code."""
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if user_namespace:
                ask_for_user_namespace(up_w, down_r)
            check()
            code = 0
        except BaseException:  # noqa: BLE001 - any failure is a probe result, reported by exit code
            pass
        os._exit(code)
    if user_namespace:
        grant_user_namespace(pid, up_r, down_w)
    _, status = os.waitpid(pid, 0)
    for fd in (up_r, up_w, down_r, down_w):
        os.close(fd)
    return os.waitstatus_to_exitcode(status)
