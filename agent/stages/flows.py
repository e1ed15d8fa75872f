"""Bidirectional flows, updated a whole batch at a time.

A flow is keyed by its two endpoints in canonical order, so both directions of a
conversation are one entry: TCP and UDP by addresses, ports and protocol; other IP protocols
by addresses and protocol. The key is a 64-bit hash of those fields (two flows sharing one
is a ~2^-64 event per pair). Flow state lives in fixed arrays of ``max_flows`` slots, found
through a vectorised ``HashIndex``: a batch is grouped by key with one sort, and every
flow it touches is updated with one array operation per field — no per-packet work.

A flow ends on RST, or on FIN from both sides, once a short linger has passed (so the last
ACKs still join it); on the idle timeout; on the active timeout; or, when the table is
full, by eviction of the least recently seen flows. Every ending is counted by reason.
All times are packet timestamps, so a replay gives the same figures every time.
"""

from __future__ import annotations

import numpy as np

from agent.base import labels
from agent.base.arrays import table, unique, unique_inverse
from agent.base.batch import I64, U64, Batch
from agent.base.hashindex import HashIndex
from agent.base.hashing import GOLDEN, MIX_2, mix
from agent.base.slots import FreeSlots

TCP_FIN, TCP_SYN, TCP_RST = 0x01, 0x02, 0x04
N_TRANSPORTS = len(labels.FLOW_TRANSPORTS)
N_REASONS = len(labels.FLOW_END_REASONS)


def endpoint_hash(hi: U64, lo: U64, port: I64) -> U64:
    return mix(mix(hi * GOLDEN, lo), port.astype(np.uint64) + np.uint64(1))


class FlowTable:
    """The active flows and the counts of flows started and ended.

    >>> t = FlowTable(max_flows=1024, idle_us=60_000_000, active_us=1_800_000_000, linger_us=2_000_000)
    >>> t.capacity, int(t.active.sum())
    (1024, 0)
    """

    def __init__(self, max_flows: int, idle_us: int, active_us: int, linger_us: int, sweep_us: int = 1_000_000) -> None:
        self.capacity = max_flows
        self.idle_us, self.active_us, self.linger_us, self.sweep_us = idle_us, active_us, linger_us, sweep_us
        self._index = HashIndex(max_flows)
        n = max_flows
        self.key = table(n, np.uint64)
        self.used = table(n, np.bool_)
        self.transport = table(n, np.uint8)
        self.first_ts = table(n, np.int64)
        self.last_ts = table(n, np.int64)
        self.closing = table(n, np.bool_)  # RST or the second FIN was seen
        self.close_ts = table(n, np.int64)  # ... when
        self.packets = table((n, 2), np.int64)  # per direction: first endpoint -> second, and back
        self.bytes = table((n, 2), np.int64)
        self.flags = table((n, 2), np.uint8)
        self._free = FreeSlots(n)
        self._closing: I64 = np.zeros(0, np.int64)
        self._linger_due = 0  # when the first of them lingers out
        self._next_sweep: int | None = None
        self._first_packet = table(n, np.intp)  # scratch: a chunk's first packet of each slot
        # Timeouts are decided to within this much packet time.
        self.resolution_us = max(1000, min(1_000_000, idle_us, active_us, linger_us or 1_000_000))
        self.active = np.zeros(N_TRANSPORTS, np.int64)
        self.started = np.zeros(N_TRANSPORTS, np.int64)
        self.ended = np.zeros((N_TRANSPORTS, N_REASONS), np.int64)

    # -- per batch ------------------------------------------------------------------------

    def apply(self, batch: Batch) -> None:
        """Account the batch's counted IP packets to their flows."""
        t = batch.transport
        take = batch.counted & batch.is_ip & (batch.error == 0) & (batch.has_ports | (t >= labels.ICMP))
        sel = take.nonzero()[0]
        if sel.size == 0:
            return
        ports = batch.has_ports[sel]
        e_src = endpoint_hash(batch.src_hi[sel], batch.src_lo[sel], np.where(ports, batch.sport[sel], 0))
        e_dst = endpoint_hash(batch.dst_hi[sel], batch.dst_lo[sel], np.where(ports, batch.dport[sel], 0))
        key = mix((e_src + e_dst) * MIX_2, batch.proto[sel].astype(np.uint64)) | np.uint64(2)
        back = (e_src > e_dst).astype(np.intp)  # canonical order: the endpoint with the smaller hash is first
        ts = batch.ts[sel]
        size, flags, transport = batch.wirelen[sel], batch.tcp_flags[sel], t[sel]
        # Timeouts are decided between chunks of at most ``resolution`` of packet time, so a
        # sparse capture read in one big batch still splits its flows where the gaps are.
        reach = np.maximum.accumulate(ts)
        start = 0
        while start < ts.size:
            stop = int(np.searchsorted(reach, reach[start] + self.resolution_us, side="right")) if reach[-1] - ts[start] > self.resolution_us else ts.size
            c = slice(start, stop)
            self._apply_chunk(key[c], back[c], ts[c], size[c], flags[c], transport[c])
            start = stop

    def _apply_chunk(self, key: U64, back: np.ndarray, ts: I64, size: I64, flags: np.ndarray, transport: np.ndarray) -> None:
        begin = int(ts.min())
        self._maybe_sweep(begin)
        self._end_lingered(begin)
        slots = self._index.lookup(key)
        known = slots >= 0
        if known.any():
            # A flow that ended in all but name before its first packet here (closed and lingered
            # out, idle, or too old) is ended now, and its key starts a new flow.
            ks, kt = slots[known], ts[known]
            self._first_packet[ks[::-1]] = np.arange(ks.size - 1, -1, -1)
            first = self._first_packet[ks] == np.arange(ks.size)
            stale = first & (
                (self.closing[ks] & (kt > self.close_ts[ks] + self.linger_us))
                | (kt - self.last_ts[ks] > self.idle_us)
                | (kt - self.first_ts[ks] > self.active_us)
            )
            if stale.any():
                self._end(ks[stale], self._reason_now(ks[stale], kt[stale]))
                slots[known] = np.where(self.used[ks], ks, -1)
                known = slots >= 0
        if not known.all():
            fresh = (~known).nonzero()[0]
            keys, first_at, inverse = unique_inverse(key[fresh])
            new_slots = self._start(keys, transport[fresh[first_at]], ts[fresh[first_at]], keep=slots[known])
            slots[fresh] = new_slots[inverse]
        ok = slots >= 0
        if not ok.all():
            slots, back, ts, size, flags = slots[ok], back[ok], ts[ok], size[ok], flags[ok]
        np.maximum.at(self.last_ts, slots, ts)
        cell = slots * 2 + back
        np.add.at(self.packets.reshape(-1), cell, 1)
        np.add.at(self.bytes.reshape(-1), cell, size)
        np.bitwise_or.at(self.flags.reshape(-1), cell, flags & (TCP_SYN | TCP_FIN | TCP_RST))  # one pass, not one per flag
        ending = ((flags & (TCP_FIN | TCP_RST)) != 0).nonzero()[0]
        if ending.size:
            es = slots[ending]
            f0, f1 = self.flags[es, 0], self.flags[es, 1]
            closed = ((((f0 | f1) & TCP_RST) != 0) | (((f0 & f1) & TCP_FIN) != 0)) & ~self.closing[es]
            if closed.any():
                # It closed with the last FIN or RST it carried here.
                np.maximum.at(self.close_ts, es[closed], ts[ending][closed])
                self.closing[es[closed]] = True
                newly = unique(es[closed])
                self._closing = np.concatenate((self._closing, newly))
                due = int(self.close_ts[newly].min()) + self.linger_us
                self._linger_due = min(self._linger_due, due) if self._closing.size > newly.size else due

    def tick(self, now_us: int) -> None:
        """Let time pass without packets (a live capture on an idle link): timeouts still fire."""
        self._maybe_sweep(now_us)
        self._end_lingered(now_us)

    # -- starting and ending --------------------------------------------------------------

    def _start(self, keys: U64, transport: np.ndarray, first: I64, keep: I64) -> I64:
        """Give each new key a slot, evicting the least recently seen flows when the table is full."""
        need = keys.size
        if need > len(self._free):
            self._evict(need - len(self._free), keep)
        n = min(need, len(self._free))
        slots = np.full(need, -1, np.int64)
        if n < need:
            # More new flows in one batch than the table holds: the extra ones start and end at once.
            lost = transport[n:]
            np.add.at(self.started, lost, 1)
            np.add.at(self.ended[:, labels.END_EVICTED], lost, 1)
        taken = self._free.take(n)
        slots[:n] = taken
        k, tr = keys[:n], transport[:n]
        self._index.insert(k, taken)
        self.key[taken] = k
        self.used[taken] = True
        self.transport[taken] = tr
        self.first_ts[taken] = first[:n]
        self.last_ts[taken] = first[:n]
        self.closing[taken] = False
        self.close_ts[taken] = 0
        self.packets[taken] = 0
        self.bytes[taken] = 0
        self.flags[taken] = 0
        started = np.bincount(tr, minlength=N_TRANSPORTS)
        self.started += started
        self.active += started
        return slots

    def _evict(self, count: int, keep: I64) -> None:
        last = np.where(self.used, self.last_ts, np.iinfo(np.int64).max)
        last[keep] = np.iinfo(np.int64).max  # never evict a flow this batch is updating
        candidates = int(self.used.sum()) - unique(keep).size
        count = min(count, candidates)
        if count <= 0:
            return
        victims = np.argpartition(last, count - 1)[:count]
        self._end(victims, np.full(count, labels.END_EVICTED, np.intp))

    def _end(self, slots: I64, reasons: np.ndarray) -> None:
        tr = self.transport[slots].astype(np.intp)
        np.add.at(self.ended.reshape(-1), tr * N_REASONS + reasons, 1)  # one flat index: add.at is slow with a tuple
        self.active -= np.bincount(tr, minlength=N_TRANSPORTS)
        self._index.delete(self.key[slots])
        self.used[slots] = False
        self.closing[slots] = False
        self.close_ts[slots] = 0
        self._free.give(slots)

    def _reason_now(self, slots: I64, now: I64) -> np.ndarray:
        """Why each flow is over at time ``now`` (for flows known to be over)."""
        closed = self.closing[slots] & (now > self.close_ts[slots] + self.linger_us)
        rst = ((self.flags[slots, 0] | self.flags[slots, 1]) & TCP_RST) != 0
        idle = now - self.last_ts[slots] > self.idle_us
        reason = np.where(closed, np.where(rst, labels.END_RST, labels.END_FIN), np.where(idle, labels.END_IDLE, labels.END_ACTIVE))
        return reason.astype(np.intp)

    def _end_lingered(self, now: int) -> None:
        if self._closing.size == 0 or now <= self._linger_due:
            return  # nothing closing has lingered out yet: skip the scan
        s = self._closing
        live = self.used[s] & self.closing[s]
        s = s[live]
        done = now > self.close_ts[s] + self.linger_us
        if done.any():
            # A slot ended otherwise and reused may be listed twice: end each once.
            over = unique(s[done])
            self._end(over, self._reason_now(over, np.full(over.size, now)))
        self._closing = s[~done]
        self._linger_due = int(self.close_ts[self._closing].min()) + self.linger_us if self._closing.size else 0

    def _maybe_sweep(self, now: int) -> None:
        """Idle and active timeouts, checked over all flows once per ``sweep_us`` of packet time."""
        if self._next_sweep is None:
            self._next_sweep = now + self.sweep_us
            return
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_us
        s = self.used.nonzero()[0]
        over = (now - self.last_ts[s] > self.idle_us) | (now - self.first_ts[s] > self.active_us)
        over |= self.closing[s] & (now > self.close_ts[s] + self.linger_us)
        if over.any():
            v = s[over]
            self._end(v, self._reason_now(v, np.full(v.size, now)))

    @property
    def size(self) -> int:
        return self.capacity - len(self._free)
