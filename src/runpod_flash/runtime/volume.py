"""A worker attaches its endpoint's network volume at `/runpod-volume`, privately.

Mechanism (Linux only): the worker enters a mount namespace of its own, makes every mount in
it private (nothing propagates back to the machine), and bind-mounts the platform's volume
directory on the mount point. Other processes, and workers of endpoints with another volume,
keep seeing their own `/runpod-volume`. Without CAP_SYS_ADMIN it first enters a user
namespace (uid and gid mapped to themselves), which any user may do where the kernel allows.

It runs first thing in every worker entry point: a mount namespace belongs to one thread, so
threads started before would not see the volume. Any failure ends the worker with one line
saying why and what to do; a worker never runs without its volume.

`python -m runpod_flash.runtime.volume --check DIR [--mount-point P]` is the platform's probe:
it attaches DIR the same way in a throwaway process and reports whether that worked.
Standard library only, so it runs in any worker interpreter.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import sys
from pathlib import Path

# Set by the platform for the workers of an endpoint that names a volume (empty: none).
ENV_VOLUME_SOURCE = "FLASH_VOLUME_SOURCE"
ENV_VOLUME_NAME = "FLASH_VOLUME_NAME"
# Where workers see their volume; Flash code uses /runpod-volume. The platform passes its own
# value to workers and its probe, so a test can point it at a path no one can mount on.
ENV_VOLUME_MOUNT_POINT = "FLASH_VOLUME_MOUNT_POINT"
DEFAULT_MOUNT_POINT = "/runpod-volume"

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


class VolumeError(RuntimeError):
    """The volume cannot be attached; the message says why and what to do."""


def mount_point() -> str:
    return os.environ.get(ENV_VOLUME_MOUNT_POINT) or DEFAULT_MOUNT_POINT


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> None:
    unshare = getattr(os, "unshare", None)  # Python 3.12+
    if unshare is not None:
        unshare(flags)
        return
    if _libc().unshare(flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _mount(source: str | None, target: str, flags: int) -> None:
    source_bytes = None if source is None else os.fsencode(source)
    flags_arg = ctypes.c_ulong(flags)
    if _libc().mount(source_bytes, os.fsencode(target), None, flags_arg, None) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _enter_user_namespace() -> None:
    """A user namespace in which this process may mount, keeping its own uid and gid."""
    uid, gid = os.geteuid(), os.getegid()
    _unshare(CLONE_NEWUSER | CLONE_NEWNS)
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def _enter_mount_namespace(label: str) -> None:
    try:
        _unshare(CLONE_NEWNS)
        return
    except OSError as exc:
        if exc.errno != errno.EPERM:
            message = f"{label}: cannot create a mount namespace ({exc.strerror})"
            raise VolumeError(message) from None
    try:
        _enter_user_namespace()
    except OSError as exc:
        raise VolumeError(
            f"{label}: this process may not create a mount namespace (no CAP_SYS_ADMIN) and the "
            f"kernel refused an unprivileged user namespace ({exc.strerror}); run the platform "
            "as root, or allow user namespaces (sysctl kernel.unprivileged_userns_clone=1, or "
            "kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu)"
        ) from None


def _ensure_mount_point(label: str, target: str) -> None:
    if os.path.isdir(target):
        return
    try:
        os.mkdir(target, 0o755)
    except FileExistsError:
        if not os.path.isdir(target):
            raise VolumeError(f"{label}: {target} exists and is not a directory; remove it, then "
                              f"create it as an empty directory (sudo mkdir {target})") from None
    except OSError as exc:
        raise VolumeError(
            f"{label}: the mount point {target} does not exist and cannot be created "
            f"({exc.strerror}); create it once as an empty directory: sudo mkdir {target} "
            "(each worker mounts its own volume on it, privately)"
        ) from None


def attach(source: str, target: str, name: str | None) -> None:
    """Bind-mount `source` at `target` in a new private mount namespace of this process
    (`name` is the volume's, for messages; None for the probe)."""
    what = f"network volume '{name}'" if name else "network volumes"
    label = f"cannot attach {what} at {target}"
    if not sys.platform.startswith("linux"):
        raise VolumeError(f"{label}: network volumes need Linux mount namespaces and this "
                          f"machine runs {sys.platform}; run the platform on Linux")
    if _thread_count() > 1:
        raise VolumeError(f"{label}: the worker already runs threads (a mount namespace is per "
                          "thread); attach the volume before anything else starts")
    if not os.path.isdir(source):
        raise VolumeError(f"{label}: its directory {source} is missing; create the volume "
                          f"again (flash volume create {name or Path(source).name})")
    _ensure_mount_point(label, target)
    _enter_mount_namespace(label)
    try:
        _mount(None, "/", MS_REC | MS_PRIVATE)
        _mount(source, target, MS_BIND | MS_REC)
    except OSError as exc:
        raise VolumeError(f"{label}: mount failed ({exc.strerror}); run the platform as root "
                          "or on a machine that allows mount namespaces") from None


def attach_from_env() -> None:
    """Attach the volume the platform named for this worker, if any (first thing at start)."""
    source = os.environ.get(ENV_VOLUME_SOURCE)
    if source:
        attach(source, mount_point(), os.environ.get(ENV_VOLUME_NAME) or None)


def attach_or_exit() -> None:
    """Entry points call this: a worker without its volume must not run."""
    try:
        attach_from_env()
    except VolumeError as exc:
        sys.exit(f"flash worker: {exc}")


def check(source: str, target: str) -> str | None:
    """Why `source` cannot be attached at `target` here, or None when it can (probe)."""
    try:
        attach(source, target, None)
    except VolumeError as exc:
        return str(exc)
    seen, expected = os.stat(target), os.stat(source)
    if (seen.st_dev, seen.st_ino) != (expected.st_dev, expected.st_ino):
        return f"cannot attach network volumes at {target}: the bind mount did not take effect"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runpod_flash.runtime.volume")
    parser.add_argument("--check", required=True, metavar="DIR")
    parser.add_argument("--mount-point", default=mount_point())
    args = parser.parse_args()
    reason = check(args.check, args.mount_point)
    if reason:
        sys.exit(reason)
    print("ok")


if __name__ == "__main__":
    main()
