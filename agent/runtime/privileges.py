"""Least privilege: started as root, the agent opens what needs root and then becomes an ordinary user.

``drop_to(user)`` runs after the captures are open and the port is bound: it hands the state
directory to the user, changes the process's user and groups, and keeps exactly one
capability, CAP_NET_RAW, so that a capture lost to an interface fault can be opened again.
Capabilities belong to threads on Linux, so this runs before any thread is started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pwd
from pathlib import Path

from agent.errors import ConfigError

log = logging.getLogger("pktagent")

CAP_NET_RAW = 13
PR_SET_KEEPCAPS = 8
_CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _keep_only_net_raw(libc: ctypes.CDLL) -> None:
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = 1 << CAP_NET_RAW
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def drop_to(user: str, state_dir: str | None = None) -> None:
    """Become ``user`` (keeping CAP_NET_RAW); a no-op when not root."""
    if os.geteuid() != 0:
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"config key user: there is no user {user!r} on this host (create it, or name another)") from None
    if state_dir and Path(state_dir).is_dir():
        for path in [Path(state_dir), *Path(state_dir).iterdir()]:
            os.chown(path, pw.pw_uid, pw.pw_gid)
    libc = _libc()
    libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    _keep_only_net_raw(libc)
    libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)
    log.info("running as %s with CAP_NET_RAW only", user)
