"""Bounded shared-memory ring in the layout of docs/record-format.md.

One ring per process (memfd ``profilemate-pyhook``). Writers are serialised by a short
``threading.Lock`` (never held while calling into vLLM, CUDA or a syscall other than the
memory copy); a record that does not fit is dropped and counted, the writer never waits.
"""

import mmap
import os
import struct
import threading
import time

MAGIC = b"PMRING\x00\x01"
HEADER_SIZE = 4096
SOURCE_PYHOOK = 2

# producer_state values
STATE_INIT, STATE_RUNNING, STATE_EXITED, STATE_PASSIVE, STATE_FAILED, STATE_DETACHED = 0, 1, 2, 3, 4, 5
# control_enable values
CONTROL_DORMANT, CONTROL_COLLECT, CONTROL_YIELD, CONTROL_DETACH = 0, 1, 2, 3

# u64 slot indexes into the header (offset / 8)
_Q_HEAD = 128 // 8
_Q_WRITTEN = 136 // 8
_Q_DROPPED = 144 // 8
_Q_BYTES_DROPPED = 152 // 8
_Q_SOURCE_DROPPED = 160 // 8
_Q_LAST_FLUSH = 168 // 8
_Q_TAIL = 192 // 8
_Q_HEARTBEAT = 80 // 8
# u32 slot indexes (offset / 4)
_I_STATE = 40 // 4
_I_FLAGS = 44 // 4
_I_ENABLE = 64 // 4
_I_DETAIL = 68 // 4
_I_SEQ = 72 // 4
_I_ACK = 76 // 4

_PAD_HDR = struct.Struct("<HHI")


def _pow2(n):
    p = 1 << 12
    while p < n:
        p <<= 1
    return p


class Ring:
    """A producer-side ring. ``write``/``write_rec`` never block and never raise."""

    def __init__(self, data_size=8 << 20, name="profilemate-pyhook", use_memfd=True):
        data_size = _pow2(int(data_size))
        self.data_size = data_size
        self.mask = data_size - 1
        self.fd = -1
        total = HEADER_SIZE + data_size
        if use_memfd and hasattr(os, "memfd_create"):
            self.fd = os.memfd_create(name, getattr(os, "MFD_CLOEXEC", 1))
            os.ftruncate(self.fd, total)
            self.mm = mmap.mmap(self.fd, total, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        else:  # anonymous shared mapping (no tracer can find it; spill still works)
            self.mm = mmap.mmap(-1, total)
        self.mv = memoryview(self.mm)
        self.data = self.mv[HEADER_SIZE:]
        self.hq = self.mv[:HEADER_SIZE].cast("Q")
        self.hi = self.mv[:HEADER_SIZE].cast("I")
        self.lock = threading.Lock()
        self.closed = False
        self.head = 0
        self.written = 0
        self.dropped = 0
        self.bytes_dropped = 0
        self.pads = []  # absolute positions of padding records (producer-private; lets the
        #                 in-process spill consumer copy whole chunks instead of walking records)
        self.mm[0:8] = MAGIC
        struct.pack_into("<IIQIIQ", self.mm, 8, 1, HEADER_SIZE, data_size, os.getpid(), SOURCE_PYHOOK,
                         time.monotonic_ns())
        self.hi[_I_STATE] = STATE_INIT

    # -- producer -----------------------------------------------------------------------
    def reserve_locked(self, n):
        """With self.lock held: return the data offset for an n-byte record or -1 (dropped)."""
        head = self.head
        off = head & self.mask
        need = n
        pad = 0
        if off + n > self.data_size:
            pad = self.data_size - off
            need += pad
        if need > self.data_size - (head - self.hq[_Q_TAIL]):
            self.dropped += 1
            self.bytes_dropped += n
            self.hq[_Q_DROPPED] = self.dropped
            self.hq[_Q_BYTES_DROPPED] = self.bytes_dropped
            return -1
        if pad:
            _PAD_HDR.pack_into(self.data, off, 0, 0, pad)
            self.pads.append(head)
            head += pad
            off = 0
            self.head = head
        return off

    def commit_locked(self, n):
        self.head += n
        self.written += 1
        self.hq[_Q_WRITTEN] = self.written
        self.hq[_Q_HEAD] = self.head  # published after the record bytes (x86 TSO; see README)

    def write_many_locked(self, recs):
        """With self.lock held: copy a batch of framed records. One memcpy when the batch fits
        before the end of the data area; record by record (padding, drops) otherwise."""
        if self.closed:
            return
        total = 0
        for r in recs:
            total += len(r)
        head = self.head
        off = head & self.mask
        if off + total <= self.data_size and total <= self.data_size - (head - self.hq[_Q_TAIL]):
            self.data[off:off + total] = b"".join(recs)
            self.head = head + total
            self.written += len(recs)
            self.hq[_Q_WRITTEN] = self.written
            self.hq[_Q_HEAD] = self.head
            return
        for r in recs:
            n = len(r)
            o = self.reserve_locked(n)
            if o >= 0:
                self.data[o:o + n] = r
                self.commit_locked(n)

    def write(self, rec):
        """Copy one framed record (bytes) into the ring. Returns False when dropped."""
        n = len(rec)
        with self.lock:
            if self.closed:
                return False
            off = self.reserve_locked(n)
            if off < 0:
                return False
            self.data[off:off + n] = rec
            self.commit_locked(n)
        return True

    def write_rec(self, st, rtype, size, vals, tail=None):
        """Pack a record directly into the ring: st is the spec's struct.Struct (header
        included), size its fixed size, vals the field values (tail length included)."""
        if tail:
            tl = len(tail)
            n = (size + tl + 7) & ~7
        else:
            n = size
        with self.lock:
            if self.closed:
                return False
            off = self.reserve_locked(n)
            if off < 0:
                return False
            st.pack_into(self.data, off, rtype, 0, n, *vals)
            if tail:
                end = off + size + tl
                self.data[off + size:end] = tail
                if n > size + tl:
                    self.data[end:off + n] = bytes(off + n - end)
            self.commit_locked(n)
        return True

    # -- state / control ----------------------------------------------------------------
    def set_state(self, state):
        self.hi[_I_STATE] = state

    def set_flags(self, flags):
        self.hi[_I_FLAGS] = flags

    def control(self):
        """(enable, detail, seq, heartbeat_ns) as last written by a tracer."""
        return self.hi[_I_ENABLE], self.hi[_I_DETAIL], self.hi[_I_SEQ], self.hq[_Q_HEARTBEAT]

    def set_control(self, enable, detail=1):
        """Used by the producer itself (PROFILEMATE_START, spill mode) and by tests."""
        self.hi[_I_ENABLE] = enable
        self.hi[_I_DETAIL] = detail

    def ack(self, seq):
        self.hi[_I_ACK] = seq

    # -- consumer (spill mode and tests) ------------------------------------------------
    def tail(self):
        return self.hq[_Q_TAIL]

    def read_available(self):
        """Consume everything written so far; return the framed records (padding removed).
        In-process consumer: copies whole chunks, using the producer's padding positions."""
        with self.lock:
            head = self.head
            pads = self.pads
            self.pads = []
        tail = self.hq[_Q_TAIL]
        if head == tail:
            return b""
        parts = []
        data = self.data
        mask = self.mask
        pos = tail
        for pad_at in pads + [head]:
            if pad_at < pos:
                continue
            # [pos, pad_at) is contiguous in the data area (a padding record ends every wrap)
            a = pos & mask
            n = pad_at - pos
            if n:
                parts.append(data[a:a + n].tobytes())
            if pad_at == head:
                break
            pos = pad_at + (self.data_size - (pad_at & mask))  # skip the padding to the wrap
        self.hq[_Q_TAIL] = head
        self.hq[_Q_LAST_FLUSH] = time.monotonic_ns()
        return b"".join(parts)

    def read_available_walk(self):
        """Consume by walking record headers (what an out-of-process tracer does; tests)."""
        head = self.hq[_Q_HEAD]
        tail = self.hq[_Q_TAIL]
        out = bytearray()
        data = self.data
        while tail < head:
            off = tail & self.mask
            rtype, _flags, size = _PAD_HDR.unpack_from(data, off)
            if size < 8 or size % 8 or off + size > self.data_size:
                # corruption: skip everything (cannot happen with this producer)
                tail = head
                break
            if rtype != 0:
                out += data[off:off + size]
            tail += size
        self.hq[_Q_TAIL] = tail
        self.hq[_Q_LAST_FLUSH] = time.monotonic_ns()
        return bytes(out)

    def counters(self):
        return {"written": self.written, "dropped": self.dropped, "bytes_dropped": self.bytes_dropped,
                "head": self.head, "tail": self.hq[_Q_TAIL]}

    def close(self):
        """Unmap and close (idempotent). Taken under the writers' lock, so a writer racing
        with a detach either finishes its copy first or sees ``closed`` and drops."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._release()

    def _release(self):
        try:
            self.data.release()
            self.hq.release()
            self.hi.release()
            self.mv.release()
            self.mm.close()
        except Exception:
            pass
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
