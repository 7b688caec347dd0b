#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus (tests/mem_protect/corpus/*.bin): one input per
area of the state machine, each a meaningful sequence the fuzzer mutates."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mpfuzz import Seq  # noqa: E402

R0_HOST = 0x40090      # first host page of R0
R0_2M = 0x40200        # 2 MiB aligned, in R0
R1_NOMAP = 0x40500
R2 = 0x40580           # not 2 MiB aligned
R2_2M = 0x40600
POOL = 0x40000
IMAGE = 0x40080

seeds = {}

# Host <-> hyp sharing with pins, donation and back, checksums.
seeds['hyp_share_pin'] = (Seq()
    .host_share_hyp(R0_HOST, 4).hyp_pin(R0_HOST + 1, 2).host_unshare_hyp(R0_HOST, 4)
    .hyp_pin(R0_HOST + 1, 1).hyp_unpin(R0_HOST + 1, 2).hyp_unpin(R0_HOST + 1, 1)
    .host_unshare_hyp(R0_HOST, 4).host_unshare_hyp(R0_HOST, 4).hyp_checksum(R0_HOST, 1)
    .host_donate_hyp(R0_HOST + 8, 3).hyp_checksum(R0_HOST + 8, 3).hyp_donate_host(R0_HOST + 8, 3)
    .hyp_donate_host(IMAGE, 1).hyp_donate_host(POOL, 2).hyp_checksum(IMAGE, 16).bytes())

# Guest lifecycle: create, donate, share both ways, destroy, reclaim.
seeds['guest_lifecycle'] = (Seq()
    .guest_create().host_donate_guest(2, R0_HOST, 0x10, 8).host_share_guest(2, R0_HOST + 8, 0x20, 4)
    .guest_share_host(2, 0x12, 2).host_abort((R0_HOST + 2) << 12).guest_unshare_host(2, 0x12, 1)
    .host_unshare_guest(2, 0x21, 2).host_reclaim_guest(2, R0_HOST, 1).guest_destroy(2)
    .host_reclaim_guest(2, R0_HOST, 8).host_reclaim_guest(2, R0_HOST, 1).guest_create()
    .host_share_guest(2, R0_HOST, 0x0, 1).bytes())

# 2 MiB blocks: share/donate whole blocks, then split them with partial ops.
seeds['blocks'] = (Seq()
    .guest_create().host_share_hyp(R0_2M, 512).host_unshare_hyp(R0_2M + 100, 7)
    .host_donate_guest(2, R2_2M, 0x200, 512).guest_destroy(2).host_reclaim_guest(2, R2_2M, 512)
    .guest_create().host_donate_guest(2, R2_2M + 512, 0x400, 512).guest_share_host(2, 0x500, 5)
    .host_abort((R2_2M + 0x300) << 12).guest_unshare_host(2, 0x501, 2)
    .host_abort(R2_2M << 12).host_abort(R0_2M << 12).dump(R0_2M, 4).bytes())

# Host aborts: memory (aligned, unaligned region start, no-map), MMIO gaps,
# the 1 GiB below the arena, the end of the input range and beyond it.
seeds['aborts'] = (Seq()
    .host_abort(R0_2M << 12).host_abort((R0_2M << 12) + 0x40).host_abort(R2 << 12)
    .host_abort(R1_NOMAP << 12).host_abort(0x0).host_abort(0x3FFF0000).host_abort(0x40400000)
    .host_abort(0x404FF000).host_abort(0x40C00000).host_abort((1 << 40) - 0x1000)
    .host_abort(1 << 40).host_abort(POOL << 12).host_abort(0x80000000).dump(0, 8).bytes())

# Pool pressure: caps, recycling, injected allocation failures.
seeds['pool'] = (Seq()
    .host_abort(0x0).host_abort(R0_2M << 12).host_abort((R2 + 3) << 12).pool_limit(0)
    .host_share_hyp(R0_HOST, 1).host_abort((R0_HOST + 20) << 12).inject(0).host_abort(0x40400000)
    .inject(1, True).host_abort(0x80000000).inject(0).guest_create().pool_limit(3).guest_create()
    .pool_limit(None).guest_create().bytes())

# Hostile arguments: zero/huge counts, wild frames, no-map and cross-region
# ranges, unknown guests, wrapping guest frames.
seeds['hostile'] = (Seq()
    .host_share_hyp(R0_HOST, 0).host_share_hyp(R0_HOST, 513).host_share_hyp((1 << 52) - 1, 2)
    .host_share_hyp(R1_NOMAP, 1).host_share_hyp(R1_NOMAP + 0x7F, 2).host_donate_hyp(0x403FF, 2)
    .guest_create().host_share_guest(0, R0_HOST, 0, 1).host_share_guest(11, R0_HOST, 0, 1)
    .host_share_guest(2, R0_HOST, (1 << 52) - 1, 1).host_share_guest(2, R0_HOST, (1 << 24) - 1, 2)
    .guest_destroy(1).host_reclaim_guest(2, R0_HOST, 1).hyp_checksum(2**64 - 1, 1)
    .host_abort(2**64 - 0x1000).bytes())

# Fragmented guest mappings, then teardown.
seeds['fragments'] = (Seq()
    .guest_create().repeat('host_share_guest', 20, g=2, p=R0_HOST, gfn=0x40, gstep=2)
    .repeat('host_donate_guest', 20, g=2, p=R0_HOST + 40, gfn=0x41, gstep=2)
    .repeat('guest_share_host', 10, g=2, gfn=0x41, gstep=2)
    .repeat('host_unshare_guest', 10, g=2, gfn=0x40, gstep=2).guest_destroy(2)
    .repeat('host_abort', 30, a=R0_HOST << 12, pstep=2).bytes())

# All guest slots.
seeds['slots'] = (Seq()
    .guest_create().guest_create().guest_create().guest_create().guest_create().guest_create()
    .guest_create().guest_create().guest_create().host_donate_guest(5, R2, 0, 1).guest_destroy(5)
    .guest_create().host_reclaim_guest(5, R2, 1).guest_create().guest_destroy(9).guest_destroy(9)
    .bytes())

out = os.path.dirname(os.path.abspath(__file__))
for name, data in seeds.items():
    with open(os.path.join(out, name + '.bin'), 'wb') as f:
        f.write(data)
print(f'wrote {len(seeds)} seeds to {out}')
