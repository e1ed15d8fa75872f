"""Network namespaces joined by a veth pair: a private wire for live-capture tests.

Traffic sent here never leaves the two namespaces this module creates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def require_namespaces(what: str) -> None:
    """For a command-line tool: exit with one line unless this process can make namespaces and send into them."""
    if os.geteuid() != 0:
        raise SystemExit(f"{what} makes network namespaces: run it as root")
    for tool in ("tcpreplay", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")


@dataclass
class VethPair:
    """``sender`` namespace with interface ``tx``, ``receiver`` namespace with interface ``rx``."""

    sender: str
    receiver: str
    tx: str = "pkt-tx"
    rx: str = "pkt-rx"

    @classmethod
    def create(cls, tag: str | None = None) -> VethPair:
        tag = tag or str(os.getpid())
        pair = cls(sender=f"pktsnd{tag}", receiver=f"pktrcv{tag}")
        pair.delete()
        sh("ip", "netns", "add", pair.sender)
        sh("ip", "netns", "add", pair.receiver)
        sh("ip", "-n", pair.sender, "link", "add", pair.tx, "type", "veth", "peer", "name", pair.rx, "netns", pair.receiver)
        for ns, dev in ((pair.sender, pair.tx), (pair.receiver, pair.rx)):
            # No IPv6 autoconfiguration chatter: the wire carries only what the test sends.
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev.replace('.', '/')}.disable_ipv6=1")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        return pair

    def in_sender(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.sender, *cmd]

    def in_receiver(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.receiver, *cmd]

    def delete(self) -> None:
        sh("ip", "netns", "del", self.sender, check=False)
        sh("ip", "netns", "del", self.receiver, check=False)
