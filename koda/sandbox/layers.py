"""Names of the isolation layers, which of them this host offers, and the refusal when one is missing.

Every layer has a stable name so that an error can say exactly what is missing
("network_namespace: unshare(CLONE_NEWNET) failed: Operation not permitted") and the user can
decide whether to accept the weaker mode. Availability is *probed* by running the same setup
code the sandbox runs (``namespaces``/``filesystem``) in a throwaway child, not guessed from
kernel versions or sysctls, so a probe that passes means the real setup will too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from koda.errors import KodaError

# Always present: plain POSIX process control that any Linux user has.
BASE_LAYERS = ("process", "rlimits", "process_group_kill", "scrubbed_env", "closed_fds", "output_cap",
               "private_tmp")
# Need root (or a host that lets us create the namespace); probed.
PROBED_LAYERS = ("mount_namespace", "pid_namespace", "network_namespace", "ipc_namespace",
                 "user_namespace", "readonly_root", "judge_separation")
ALL_LAYERS = BASE_LAYERS + PROBED_LAYERS


class IsolationError(KodaError):
    """A required isolation layer is missing and the caller did not accept the weaker mode."""


@dataclass(frozen=True, slots=True)
class Probe:
    """Which layers work on this host, and why each missing one does not."""

    available: tuple[str, ...]
    missing: dict[str, str]  # layer -> reason


_cache: Probe | None = None


def probe(refresh: bool = False) -> Probe:
    """Try each layer's real setup in a forked child; cached per process (a few milliseconds)."""
    global _cache
    if _cache is None or refresh:
        _cache = _run_probe()
    return _cache


def resolve(allow_weaker: bool) -> frozenset[str]:
    """The layers a run uses: all of them, or refuse, naming what is missing.

    With ``allow_weaker`` the missing layers are simply left out; the run still gets every
    layer the host does offer.
    """
    found = probe()
    if found.missing and not allow_weaker:
        what = "; ".join(f"{name}: {why}" for name, why in found.missing.items())
        raise IsolationError(f"isolation layers unavailable on this host ({what}); refusing to run "
                             "untrusted code (allow_weaker=True / --allow-weaker-isolation accepts this)")
    return frozenset(found.available)


def _run_probe() -> Probe:
    """Probe in a fresh interpreter rather than a fork of the caller.

    The caller may be a large, multi-threaded trainer, which is neither cheap nor safe to fork;
    a new ``python -S`` with an empty environment is both, and it is what a zygote is.
    """
    from koda.sandbox import filesystem

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    boot = f"import sys; sys.path.insert(0, {root!r}); from koda.sandbox import layers; layers._probe_main()"
    try:
        argv = [sys.executable, "-S", "-s", "-B", "-c", boot, json.dumps(filesystem.host_paths())]
        proc = subprocess.run(argv, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
        missing = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        missing, proc = None, None
    if missing is None:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1] if proc else "could not start"
        missing = dict.fromkeys(PROBED_LAYERS, f"probe process failed ({why})")
    available = tuple(n for n in ALL_LAYERS if n not in missing)
    return Probe(available=available, missing=missing)


def _probe_main() -> None:
    """Body of the probe process: prints the missing layers as JSON."""
    paths = json.loads(sys.argv[1])
    print(json.dumps(_probe_in_child(paths)), flush=True)


def _probe_in_child(paths: list[str]) -> dict[str, str]:
    """Run the namespace, filesystem and identity setup as a real sandbox would, and record failures."""
    from koda.sandbox import filesystem, namespaces

    missing: dict[str, str] = {}
    if os.geteuid() != 0:
        reason = "needs root (CAP_SYS_ADMIN, CAP_SETUID) on this host"
        return dict.fromkeys(PROBED_LAYERS, reason)
    wanted = frozenset(PROBED_LAYERS)
    missing.update(namespaces.probe_return_home())
    for layer, flags in namespaces.UNSHARE_FLAGS.items():
        if layer in missing:
            continue
        try:
            namespaces.unshare_layer(layer, flags)
        except namespaces.LayerError as err:
            missing[layer] = err.reason
    enabled = wanted - set(missing)
    if "pid_namespace" in enabled:
        pid = os.fork()  # the first child becomes PID 1 of the new namespace, as in a real run
        if pid != 0:
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status))
    try:
        filesystem.build_root(enabled, 1, None, paths)
    except namespaces.LayerError as err:
        missing[err.layer] = err.reason
        # the mount namespace serves only the read-only root: without it, it is not used
        missing.setdefault("readonly_root", f"needs mount_namespace ({err.reason})")
        missing.setdefault("mount_namespace", f"unused without readonly_root ({err.reason})")
    missing.update(namespaces.probe_identity(enabled - set(missing)))
    return missing
