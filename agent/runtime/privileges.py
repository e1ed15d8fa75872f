"""Least privilege: started as root, the agent opens what needs root and then becomes an ordinary user.

``drop_to(user)`` runs after the captures are open and the port is bound, before the device
database is opened and before any thread or worker process starts: it hands the state directory
to the user without following a link in it, drops every capability but CAP_NET_RAW from the
bounding set, sets no_new_privs, changes the process's user and groups, and keeps exactly one
capability, CAP_NET_RAW, so that a capture lost to an interface fault can be opened again.
Capabilities belong to threads and are inherited over fork, so the workers forked afterwards
run with the same set. ``harden()`` sets no_new_privs in any case.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import stat

from agent.errors import ConfigError

log = logging.getLogger("pktagent")

CAP_NET_RAW = 13
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # the C library the interpreter runs on, whatever its file name


def _prctl(libc: ctypes.CDLL, option: int, arg: int = 0) -> None:
    if libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}) failed: {os.strerror(errno)}")


def _keep_only_net_raw(libc: ctypes.CDLL) -> None:
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = 1 << CAP_NET_RAW
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40  # CAP_CHECKPOINT_RESTORE, the last one of Linux 5.9 to 6.x


def _bound_to_net_raw(libc: ctypes.CDLL) -> None:
    """Drop every capability but CAP_NET_RAW from the bounding set (needs CAP_SETPCAP: while still root)."""
    for cap in range(_last_cap() + 1):
        if cap != CAP_NET_RAW:
            _prctl(libc, PR_CAPBSET_DROP, cap)
    _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def harden() -> None:
    """no_new_privs for this process and every one it forks: no exec can ever give it more than it has."""
    _prctl(_libc(), PR_SET_NO_NEW_PRIVS, 1)


def hand_over_state_dir(state_dir: str, uid: int, gid: int, user: str) -> None:
    """Give ``state_dir`` and the regular files in it to ``uid``, never following a link.

    A directory owned by anyone but root or ``uid`` is refused: whoever owns it could plant
    entries in it. A link, a hard-linked file or anything but a regular file is left alone:
    chowning through it would hand its target (``/etc/shadow``, say) to the user.
    """
    try:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)  # made by root: the user may not be able to
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise ConfigError(f"config key state_dir: {state_dir} is not a directory that can be used ({e.strerror}): name a directory, not a link") from None
    try:
        owner = os.fstat(fd).st_uid
        if owner not in (0, uid):
            raise ConfigError(
                f"config key state_dir: {state_dir} is owned by uid {owner}, not by root or {user}: `chown {user} {state_dir}` or name another directory"
            )
        if owner != uid:
            os.fchown(fd, uid, gid)
        for name in os.listdir(fd):
            _hand_over_entry(fd, name, uid, gid, state_dir)
    finally:
        os.close(fd)


def _hand_over_entry(dir_fd: int, name: str, uid: int, gid: int, state_dir: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_uid == uid:
            return
        # Opened without following a link; checked again on what was opened, then changed through
        # that descriptor: an entry swapped for a link in between changes nothing.
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            os.fchown(fd, uid, gid)
        else:
            log.warning("left %s/%s alone: it is not a file of its own (a hard link?)", state_dir, name)
    finally:
        os.close(fd)


def become(user: str, state_dir: str | None) -> None:
    """``drop_to``, after importing what the agent imports later and the user may not be able to read
    (the interpreter's own library under a root-only home, say)."""
    import sqlite3  # noqa: F401

    import agent.naming.store  # noqa: F401

    drop_to(user, state_dir)


def drop_to(user: str, state_dir: str | None = None) -> None:
    """Become ``user`` (keeping CAP_NET_RAW only, in the bounding set too); a no-op when not root."""
    if os.geteuid() != 0:
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"config key user: there is no user {user!r} on this host (create it, or name another)") from None
    if state_dir:
        hand_over_state_dir(state_dir, pw.pw_uid, pw.pw_gid, user)
    libc = _libc()
    _bound_to_net_raw(libc)
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    _prctl(libc, PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    _keep_only_net_raw(libc)
    _prctl(libc, PR_SET_KEEPCAPS, 0)
    log.info("running as %s with CAP_NET_RAW only", user)
