"""Decode framed records (tests and tools; the joiner is Go)."""

from . import _records as R


def decode(buf):
    """Split framed records (padding records skipped) and decode each with its spec."""
    out = []
    off = 0
    n = len(buf)
    while off < n:
        t, _f, size = R.HEADER.unpack_from(buf, off)
        if size < 8 or size % 8 or off + size > n:
            raise ValueError("corrupt record at offset %d (type %d size %d)" % (off, t, size))
        if t:
            spec = R.BY_TYPE.get(t)
            if spec is not None:
                d = spec.unpack(bytes(buf[off:off + size]))
                d["_name"] = spec.name
            else:
                d = {"_name": "unknown", "type": t}
            d["_size"] = size
            out.append(d)
        off += size
    return out
