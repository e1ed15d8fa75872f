"""pktagent's exceptions: one tree, so the command line can catch exactly the mistakes a user can make.

    PktagentError
    ├── ConfigError      the configuration (file, flags or web config) is invalid
    ├── CaptureError     a capture cannot be opened or read (no such interface, no permission,
    │                    not a capture file, a BPF filter libpcap rejects)
    └── StoreError       the device store cannot be opened or written

Every message says what is wrong and, where the user can do something, what to do.
"""

from __future__ import annotations


class PktagentError(Exception):
    """Base of every error pktagent raises on purpose."""


class ConfigError(PktagentError):
    """The configuration is invalid; the message names the key and what is wrong with it."""


class CaptureError(PktagentError):
    """A capture source cannot be opened or read."""


class CapturePermissionError(CaptureError):
    """The process lacks the privilege to capture (CAP_NET_RAW)."""


class StoreError(PktagentError):
    """The device store cannot be used."""
