"""Forward TCP connections from a listening socket it inherits to HOST:PORT in its own network namespace.

Run under ``ip netns exec NS`` with a socket the parent bound on the host's loopback: the
listener stays in the host's namespace, the connections it makes are in NS. So Prometheus on
the host's loopback can scrape an agent that listens on NS's loopback, and no traffic leaves
either loopback.

    python nsbridge.py FD HOST PORT
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def main() -> None:
    listener = socket.socket(fileno=int(sys.argv[1]))
    target = (sys.argv[2], int(sys.argv[3]))
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
