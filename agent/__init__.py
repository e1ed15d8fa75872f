"""pktagent: a network-traffic exporter for Raspberry Pi fleets and small Linux hosts."""

import os

# numpy's OpenBLAS starts a thread per core at import, each with its own buffers (3.7 MB of RSS
# here); pktagent does no linear algebra. Set before anything imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
