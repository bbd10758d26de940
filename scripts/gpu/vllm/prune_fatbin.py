#!/usr/bin/env python3
"""Zero the device code a GPU will never load, so a CUDA extension compresses small.

    prune_fatbin.py [--keep-sm 90] [--stats] LIB.so [OUT.so]

A CUDA extension carries one fat binary per compiled source file in its `.nv_fatbin`
section; each holds a cubin (ELF) per target architecture and usually PTX. vLLM's
`_C_stable_libtorch.abi3.so` is 79 MB, of which 54 MB is fat binaries for sm_75 … sm_120:
too much for the 64 MiB that one device-tool command may carry. This tool overwrites the
payload of every cubin whose architecture is not the kept one with zeros (headers, sizes and
offsets unchanged; PTX only where the same fat binary
also holds the kept cubin, since the runtime JIT-compiles PTX only when no cubin fits), so the file keeps its layout and every symbol, the CUDA
runtime still finds the kept architecture's cubin, and zstd shrinks the zeros to nothing.
A GPU of another architecture would find a zeroed cubin: use the output only on the GPU it
was pruned for.

Fat binary layout (as read by cuobjdump and documented by the community; checked here by
requiring that the containers tile the section exactly):
  container: u32 magic 0xBA55ED50, u16 version, u16 header_size, u64 fat_size; then entries
  entry:     u16 kind (1 PTX, 2 ELF), u16 version, u32 header_size, u64 padded_payload_size,
             ... u32 sm_version at +28 ...; the payload follows the entry header.
"""
import argparse
import collections
import shutil
import struct
import sys

MAGIC = 0xBA55ED50


def section(data, name):
    if data[:4] != b"\x7fELF" or data[4] != 2:
        sys.exit("not an ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    def sh(i):
        return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
    stroff = sh(shstrndx)[4]
    for i in range(shnum):
        s = sh(i)
        end = data.index(b"\0", stroff + s[0])
        if data[stroff + s[0]:end].decode() == name:
            return s[4], s[5]
    return None


def walk(data, off, size):
    """Yields (container, kind, sm, payload_off, payload_len) for every entry; raises on a layout it does not understand."""
    pos, end = off, off + size
    while pos < end:
        if end - pos < 16:
            if any(data[pos:end]):
                raise ValueError(f"trailing bytes at {pos:#x}")
            break
        magic, _ver, hsize, fsize = struct.unpack_from("<IHHQ", data, pos)
        if magic != MAGIC:
            # containers are 8-byte aligned; padding between them is zero
            if struct.unpack_from("<Q", data, pos)[0] == 0:
                pos += 8
                continue
            raise ValueError(f"no fat binary magic at {pos:#x}")
        e, cend = pos + hsize, pos + hsize + fsize
        while e < cend:
            kind, _v, ehsize, psize = struct.unpack_from("<HHIQ", data, e)
            sm, = struct.unpack_from("<I", data, e + 28)
            if kind not in (1, 2) or ehsize < 32 or e + ehsize + psize > cend:
                raise ValueError(f"bad entry at {e:#x}: kind {kind} header {ehsize} size {psize}")
            yield pos, kind, sm, e + ehsize, psize
            e += ehsize + psize
        pos = cend


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep-sm", type=int, default=90, help="architecture whose cubins stay (90 = H100/H200)")
    ap.add_argument("--stats", action="store_true", help="only print what the fat binaries hold")
    ap.add_argument("lib")
    ap.add_argument("out", nargs="?")
    a = ap.parse_args()
    data = bytearray(open(a.lib, "rb").read())
    sec = section(data, ".nv_fatbin")
    if sec is None:
        sys.exit(f"{a.lib}: no .nv_fatbin section")
    entries = list(walk(data, *sec))
    by = collections.Counter()
    for _, kind, sm, _, n in entries:
        by[("ptx" if kind == 1 else "sm", sm)] += n
    for (k, sm), n in sorted(by.items()):
        print(f"{k}_{sm}: {n / 1e6:.1f} MB", file=sys.stderr)
    if a.stats:
        return
    if not a.out:
        sys.exit("give OUT.so (or --stats)")
    if not any(kind == 2 and sm == a.keep_sm for _, kind, sm, _, _ in entries):
        sys.exit(f"no sm_{a.keep_sm} cubin in {a.lib}: refusing to prune")
    # PTX is JIT-compiled only when no cubin fits: in a container that has the kept cubin it is dead.
    has_kept = {c for c, kind, sm, _, _ in entries if kind == 2 and sm == a.keep_sm}
    zeroed = 0
    for c, kind, sm, p, n in entries:
        if (kind == 2 and sm != a.keep_sm) or (kind == 1 and c in has_kept):
            data[p:p + n] = bytes(n)
            zeroed += n
    with open(a.out, "wb") as f:
        f.write(data)
    shutil.copymode(a.lib, a.out)
    print(f"{a.out}: zeroed {zeroed / 1e6:.1f} MB of device code sm_{a.keep_sm} does not load", file=sys.stderr)


if __name__ == "__main__":
    main()
