"""A live engine on one interface whose reopen after a fault waits for the word ``open`` on stdin (test_reopen_gap's probe).

Prints ``ready`` once capturing, ``waiting`` when a reopen reaches the gate, and one JSON line of
figures for each ``snap``; ``stop`` ends it.
"""

from __future__ import annotations

import json
import sys
import threading

from agent.capture import Source
from agent.config import Config
from agent.runtime.agent import open_live
from agent.runtime.engine import Engine
from agent.runtime.pipeline import Pipeline


def main(interface: str) -> None:
    cfg = Config().replace("capture", interfaces=(interface,))
    gate = threading.Event()
    opened = []

    def opener(i: int) -> Source:
        if opened:
            print("waiting", flush=True)
            gate.wait()
        opened.append(i)
        return open_live(cfg, [interface], i)

    engine = Engine(Pipeline(cfg, [interface]), opener, batch_size=4096, window=0.01, queue_capacity=1 << 16, blocking=False)
    engine.open_all()
    engine.start()
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "open":
            gate.set()
        elif command == "snap":
            s = engine.snapshot()
            figures = {"up": int(s.capture_up[0]), "captured": int(s.captured[0]), "processed": int(s.processed[0]), "dropped": s.dropped[0].tolist()}
            print(json.dumps(figures), flush=True)
        elif command == "stop":
            break
    gate.set()
    engine.close()


if __name__ == "__main__":
    main(sys.argv[1])
