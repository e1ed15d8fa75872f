"""The pipeline's running totals: traffic by interface, network, transport and direction, and how the work went.

One ``Counters`` belongs to one pipeline and is changed only between batches, under the
pipeline's lock; ``snapshot`` copies it out for the exporters.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.base import labels
from agent.base.batch import Batch
from agent.base.snapshot import BATCH_SIZE_BUCKETS, PROCESSING_BUCKETS, Histogram

N_NET, N_TR, N_DIR = len(labels.NETWORKS), len(labels.TRANSPORTS), len(labels.DIRECTIONS)
N_CELLS = N_NET * N_TR * N_DIR


class Counters:
    def __init__(self, n_interfaces: int) -> None:
        n = n_interfaces
        self.processed = np.zeros(n, np.int64)
        self.duplicate = np.zeros(n, np.int64)
        self.sampled_out = np.zeros(n, np.int64)
        self.unsupported_link = np.zeros(n, np.int64)
        self.last_packet_us = np.zeros(n, np.int64)
        self.decode_errors = np.zeros((n, len(labels.DECODE_ERRORS) + 1), np.int64)
        self.traffic_packets = np.zeros((n, N_CELLS), np.float64)
        self.traffic_bytes = np.zeros((n, N_CELLS), np.float64)
        self.batch_seconds = np.zeros(len(PROCESSING_BUCKETS) + 1, np.int64)
        self.batch_sizes = np.zeros(len(BATCH_SIZE_BUCKETS) + 1, np.int64)
        self.batch_seconds_sum = 0.0
        self.batch_sizes_sum = 0.0
        self.busy_seconds = 0.0
        self.min_batch_seconds = 0.0
        self.max_batch_seconds = 0.0

    def add(self, b: Batch, scale: float) -> None:
        """Count one decoded batch: its duplicates, sampled-out packets, errors and traffic."""
        i = b.raw.iface
        n = len(b)
        dup = int(np.count_nonzero(b.duplicate))
        out = int(np.count_nonzero(b.sampled_out))
        self.duplicate[i] += dup
        self.sampled_out[i] += out
        self.processed[i] += n - dup - out
        self.decode_errors[i] += np.bincount(b.error, minlength=self.decode_errors.shape[1])
        if n:
            self.last_packet_us[i] = max(self.last_packet_us[i], int(b.ts.max()))
        counted = b.counted
        cell = (b.network.astype(np.intp) * N_TR + b.transport) * N_DIR + b.direction
        if dup or out:
            cell, wire = cell[counted], b.wirelen[counted]
        else:
            wire = b.wirelen
        packets: npt.NDArray[np.float64] = np.bincount(cell, minlength=N_CELLS).astype(np.float64)
        octets: npt.NDArray[np.float64] = np.bincount(cell, weights=wire, minlength=N_CELLS).astype(np.float64)
        self.traffic_packets[i] += packets * scale
        self.traffic_bytes[i] += octets * scale

    def add_unsupported(self, iface: int, count: int) -> None:
        self.unsupported_link[iface] += count

    def observe_batch(self, seconds: float, size: int) -> None:
        """Record how long one batch took and how many packets it held."""
        self.batch_seconds[np.searchsorted(PROCESSING_BUCKETS, seconds)] += 1
        self.batch_sizes[np.searchsorted(BATCH_SIZE_BUCKETS, size)] += 1
        self.batch_seconds_sum += seconds
        self.batch_sizes_sum += size
        self.busy_seconds += seconds
        if self.min_batch_seconds == 0.0 or seconds < self.min_batch_seconds:
            self.min_batch_seconds = seconds
        self.max_batch_seconds = max(self.max_batch_seconds, seconds)

    def histograms(self) -> tuple[Histogram, Histogram]:
        return (
            Histogram(PROCESSING_BUCKETS, self.batch_seconds.copy(), self.batch_seconds_sum),
            Histogram(BATCH_SIZE_BUCKETS, self.batch_sizes.copy(), self.batch_sizes_sum),
        )
