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


def unshare_for_run(layers: frozenset[str]) -> None:
    """Enter the PID, network and IPC namespaces (the starter does this for the judge it forks).

    The mount namespace is the judge's own (``filesystem.build_root``): its ``pivot_root`` moves
    the root of every process in the namespace, and the starter must keep the host's ``/proc``
    to write the judge's id maps. The user namespace comes last, after the mounts.
    """
    for layer, flags in UNSHARE_FLAGS.items():
        if layer in layers and layer != "mount_namespace":
            unshare_layer(layer, flags)


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
    """Check the user namespace handshake and the uid switch in a throwaway child."""
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            ask_for_user_namespace(up_w, down_r)
            code = 2
            become("solver", frozenset(enabled | {"user_namespace", "judge_separation"}))
            code = 0 if os.getuid() == _INSIDE["solver"] else 2
        except BaseException:  # noqa: BLE001 - any failure is a probe result, reported by exit code
            pass
        os._exit(code)
    grant_user_namespace(pid, up_r, down_w)
    _, status = os.waitpid(pid, 0)
    for fd in (up_r, up_w, down_r, down_w):
        os.close(fd)
    code = os.waitstatus_to_exitcode(status)
    if code == 3:
        return {"user_namespace": "unshare(CLONE_NEWUSER) or its uid/gid maps failed"}
    if code != 0:
        return {"judge_separation": "cannot switch to a separate solver uid"}
    return {}
