#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the hand-minimised regression inputs (regressions/*.bin) described
in regressions/README.md. Inputs the fuzzer found are kept as it wrote them
(crash-*.bin); this script only writes the named ones."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'corpus'))
from mpfuzz import Seq  # noqa: E402

P = 0x40100   # host memory in R0
N = 61        # guest leaves: 2 * 61 > the 117 pool pages free in the test world

cases = {
    # guest_destroy reserves 2 host tables per guest leaf, even for pages the
    # guest owns (which destroy does not touch in the host stage 2).
    'destroy_reserve_per_leaf': Seq().guest_create().host_donate_guest(2, P, 0x1, N).guest_destroy(2),
    # The same for pages the host lent to the guest.
    'destroy_shared_reserve_per_leaf': Seq().guest_create().host_share_guest(2, P, 0x1, N).guest_destroy(2),
    'unshare_guest_reserve_per_leaf':
        Seq().guest_create().host_share_guest(2, P, 0x1, N).host_unshare_guest(2, 0x1, N),
    'guest_share_host_reserve_per_leaf':
        Seq().guest_create().host_donate_guest(2, P, 0x1, N).guest_share_host(2, 0x1, N),
    'guest_unshare_host_reserve_per_leaf':
        Seq().guest_create().host_donate_guest(2, P, 0x1, N).guest_share_host(2, 0x1, 21)
        .guest_share_host(2, 0x16, 21).guest_share_host(2, 0x2b, 19).guest_unshare_host(2, 0x1, N),
    # A small guest under pool pressure: three pages lent one at a time
    # (one contiguous run whose host entries already exist, so destroy needs
    # no new table), 4 pool pages free: destroy reserves 2 per leaf = 6.
    'destroy_small_guest_pool_pressure':
        Seq().guest_create().host_share_guest(2, P, 0x1, 1).host_share_guest(2, P + 1, 0x2, 1)
        .host_share_guest(2, P + 2, 0x3, 1).pool_limit(4).guest_destroy(2),
    # host_reclaim_guest reserves the hyp tables twice (transient map and its
    # unmap); two pages across a 2 MiB boundary: 11 reserved, at most 10
    # (here 1) ever needed, 10 free after recycling.
    'reclaim_reserve_hyp_twice':
        Seq().guest_create().host_donate_guest(2, 0x401FF, 0x10, 2).guest_destroy(2).pool_limit(10)
        .host_reclaim_guest(2, 0x401FF, 2),
    # Guest frame ranges ending at or past 2^52 frames: (gfn + nr) << 12
    # wrapped and the check passed, the walk then said -ERANGE; must be -EINVAL.
    'gfn_wrap_einval':
        Seq().guest_create().host_share_guest(2, P, (1 << 52) - 1, 1).host_donate_guest(2, P, (1 << 52) - 2, 2)
        .host_unshare_guest(2, (1 << 52) - 1, 1).guest_share_host(2, (1 << 52) - 2, 2)
        .guest_unshare_host(2, (1 << 52) - 512, 512),
}

for name, seq in cases.items():
    with open(os.path.join(HERE, name + '.bin'), 'wb') as f:
        f.write(seq.bytes())
print(f'wrote {len(cases)} regression inputs to {HERE}')
