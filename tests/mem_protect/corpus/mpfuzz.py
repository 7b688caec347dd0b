# SPDX-License-Identifier: Apache-2.0
"""Encoder for the input format of tests/mem_protect/fuzz_mem_protect.cc.

An input is a sequence of steps. Each step starts with a slot byte (index
into kSlots, taken modulo its length) followed by the slot's arguments. This
module writes exact arguments; the fuzzer mutates freely from there. Keep the
numbers below in sync with kSlots / read_* in fuzz_mem_protect.cc.

    python3 tests/mem_protect/corpus/gen_seeds.py        # rewrites corpus/*.bin
    python3 tests/mem_protect/regressions/gen.py         # rewrites regressions/*.bin
"""
import struct

SLOT = dict(
    host_share_hyp=0, host_unshare_hyp=1, host_donate_hyp=2, hyp_donate_host=3,
    host_share_guest=4, host_unshare_guest=6, host_donate_guest=7, guest_share_host=9,
    guest_unshare_host=10, host_reclaim_guest=11, hyp_pin=12, hyp_unpin=13,
    guest_create=14, guest_destroy=16, host_abort=17, hyp_checksum=20,
    pool_limit=21, inject=22, repeat=23, dump=25,
)
# kRepeatKinds
REPEAT = dict(host_share_guest=0, host_donate_guest=1, host_share_hyp=2, host_donate_hyp=3,
              host_abort=4, guest_share_host=5, host_unshare_guest=6, hyp_pin=7)

SPAN_LO, SPAN_HI = 0x40000, 0x40C00
MMIO_ANCHORS = [0, 0x3FFF0000, 0x40400000, 0x404FF000, 0x40C00000, 0x80000000, 0xC0001000,
                0x7FFFFF000, (1 << 40) - 0x1000, 0x12345000]


def u64(v):
    return struct.pack('<Q', v & (2**64 - 1))


def pfn(p):
    """A frame: memory frames exactly (mode 2), anything else raw (mode 3, case 0)."""
    if SPAN_LO <= p < SPAN_HI:
        return bytes([0x80]) + struct.pack('<H', p - SPAN_LO)
    return bytes([0xC0]) + u64(p)


def nr(n):
    if 1 <= n <= 8:
        return bytes([n - 1])
    if n == 512:
        return bytes([200])
    if n == 0:
        return bytes([215])
    if n < 512 and n % 2 == 1:
        return bytes([150, (n - 1) // 2])
    if 513 <= n <= 513 + 255:
        return bytes([225, n - 513])
    return bytes([240]) + u64(n)


def gfn(g):
    if 0 <= g < 1024:
        return bytes([g >> 8, g & 0xFF])
    return bytes([0xC3]) + u64(g)


def guest(g):
    """Guest ids 2..9 directly; anything in 0..31 through the raw form."""
    if 2 <= g <= 9:
        return bytes([g - 2])
    return bytes([224 + g])


def addr(a):
    """A host abort address: memory (page + 16-byte-granular offset) or raw."""
    page, off = a >> 12, a & 0xFFF
    if SPAN_LO <= page < SPAN_HI and off % 16 == 0:
        return bytes([0x00]) + pfn(page) + bytes([off // 16])
    if off == 0:
        for i, base in enumerate(MMIO_ANCHORS):
            if 0 <= page - (base >> 12) < 256:
                return bytes([130 + i, page - (base >> 12)])  # (130 + i) % 10 == i
    return bytes([0xC1]) + u64(a)


class Seq:
    """Builds one input."""

    def __init__(self):
        self.b = bytearray()

    def raw(self, *bs):
        self.b += bytes(bs)
        return self

    def host_share_hyp(self, p, n): return self._pn('host_share_hyp', p, n)
    def host_unshare_hyp(self, p, n): return self._pn('host_unshare_hyp', p, n)
    def host_donate_hyp(self, p, n): return self._pn('host_donate_hyp', p, n)
    def hyp_donate_host(self, p, n): return self._pn('hyp_donate_host', p, n)
    def hyp_pin(self, p, n): return self._pn('hyp_pin', p, n)
    def hyp_unpin(self, p, n): return self._pn('hyp_unpin', p, n)
    def hyp_checksum(self, p, n): return self._pn('hyp_checksum', p, n)

    def _pn(self, op, p, n):
        self.b += bytes([SLOT[op]]) + pfn(p) + nr(n)
        return self

    def host_share_guest(self, g, p, gf, n):
        self.b += bytes([SLOT['host_share_guest']]) + guest(g) + pfn(p) + gfn(gf) + nr(n)
        return self

    def host_donate_guest(self, g, p, gf, n):
        self.b += bytes([SLOT['host_donate_guest']]) + guest(g) + pfn(p) + gfn(gf) + nr(n)
        return self

    def host_unshare_guest(self, g, gf, n): return self._gn('host_unshare_guest', g, gf, n)
    def guest_share_host(self, g, gf, n): return self._gn('guest_share_host', g, gf, n)
    def guest_unshare_host(self, g, gf, n): return self._gn('guest_unshare_host', g, gf, n)

    def _gn(self, op, g, gf, n):
        self.b += bytes([SLOT[op]]) + guest(g) + gfn(gf) + nr(n)
        return self

    def host_reclaim_guest(self, g, p, n):
        self.b += bytes([SLOT['host_reclaim_guest']]) + guest(g) + pfn(p) + nr(n)
        return self

    def guest_create(self):
        self.b += bytes([SLOT['guest_create']])
        return self

    def guest_destroy(self, g):
        self.b += bytes([SLOT['guest_destroy']]) + guest(g)
        return self

    def host_abort(self, a):
        self.b += bytes([SLOT['host_abort']]) + addr(a)
        return self

    def pool_limit(self, extra):
        """Pool capped at pages in use + extra (0..11); None removes the cap."""
        self.b += bytes([SLOT['pool_limit'], 240 if extra is None else extra])
        return self

    def inject(self, n, sticky=False):
        """The next abort/guest_create sees allocation n (0..4) fail."""
        self.b += bytes([SLOT['inject'], n | (0x80 if sticky else 0)])
        return self

    def repeat(self, kind, count, pstep=1, gstep=1, **args):
        """`count` (2..64) single-page ops of `kind`, pfn/gfn/addr advancing."""
        b = REPEAT[kind] | (0x10 if pstep == 2 else 0) | (0x20 if gstep == 2 else 0)
        self.b += bytes([SLOT['repeat'], b, count - 2])
        if kind in ('host_share_guest', 'host_donate_guest'):
            self.b += guest(args['g']) + pfn(args['p']) + gfn(args['gfn']) + nr(1)
        elif kind in ('host_share_hyp', 'host_donate_hyp', 'hyp_pin'):
            self.b += pfn(args['p']) + nr(1)
        elif kind in ('guest_share_host', 'host_unshare_guest'):
            self.b += guest(args['g']) + gfn(args['gfn']) + nr(1)
        elif kind == 'host_abort':
            self.b += addr(args['a'])
        return self

    def dump(self, p, mx):
        """Checks dump_host(p, mx) (mx 1..16, or 0)."""
        self.b += bytes([SLOT['dump']]) + pfn(p) + bytes([255 if mx == 0 else mx - 1])
        return self

    def bytes(self):
        return bytes(self.b)
