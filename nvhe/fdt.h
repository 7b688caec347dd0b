// SPDX-License-Identifier: Apache-2.0
// A bounds-checked reader for the flattened device tree (DTB) the boot loader
// hands to the EL2 payload. The blob is untrusted: every read is checked
// against the header's block bounds, so a malformed blob yields an error
// message and a clean error return, never an out-of-bounds access, a loop
// that does not end or unbounded recursion (the walk is iterative, every
// step advances, nesting is capped at kMaxDepth).
//
// Freestanding: no heap, no libc beyond memcpy/memset; all multi-byte reads
// are byte loads (the blob may be unaligned and, with the MMU off, in Device
// memory).
#pragma once

#include "mem_protect/memmap.h"
#include "pgtable/types.h"

namespace pkvm::fdt {

inline constexpr u32 kMaxMem = 16;
inline constexpr u32 kMaxReserved = 32;
inline constexpr u32 kMaxCpus = 8;
/// Deepest node nesting accepted, the root node counting as 1.
inline constexpr u32 kMaxDepth = 16;

/// The PSCI conduit named by the /psci node's "method" property.
enum class PsciMethod : u8 { kNone, kSmc, kHvc };

/// One reserved physical range: a /memreserve/ entry or a /reserved-memory
/// child with a reg property.
struct Reserved {
  u64 base;
  u64 size;
  bool no_map;  ///< The /reserved-memory child has "no-map" (never for /memreserve/).
};

/// What the payload needs from the DTB.
struct BootInfo {
  /// Root children with device_type = "memory" (status okay), each reg tuple
  /// decoded with the root's #address-cells/#size-cells (2/1 when absent);
  /// zero-sized tuples are skipped. flags is always 0.
  MemRegion mem[kMaxMem];
  u32 nr_mem;
  /// /memreserve/ entries first (block order, zero-sized ones skipped), then
  /// /reserved-memory children with reg (node order, decoded with
  /// /reserved-memory's own cells; disabled children skipped).
  Reserved reserved[kMaxReserved];
  u32 nr_reserved;
  /// reg (MPIDR affinity bits) of /cpus children with device_type "cpu",
  /// decoded with /cpus' #address-cells; status "fail*" nodes are skipped.
  u64 cpu_mpidr[kMaxCpus];
  u32 nr_cpus;
  /// "method" of the first enabled node named /psci or compatible with
  /// "arm,psci", "arm,psci-0.2" or "arm,psci-1.0" that has one.
  PsciMethod psci;
  /// First reg tuple of the /chosen "stdout-path" node (":options" stripped,
  /// an alias resolved through /aliases), else of the first enabled node
  /// compatible "arm,pl011"; translated to a CPU physical address through the
  /// parents' "ranges". 0/0 when neither exists.
  u64 uart_base, uart_size;
  /// /chosen linux,initrd-start / linux,initrd-end (one or two cells); 0/0
  /// when absent.
  u64 initrd_start, initrd_end;
  /// /chosen boolean properties "pkvm,verbose", "pkvm,selftest",
  /// "pkvm,test-exit" (present = true).
  bool verbose, selftest, test_exit;
};

/// Parses and fully validates `blob` (at most `max_size` bytes readable) into
/// `*out`. Returns 0, -kEINVAL for a malformed or unsupported blob, or -kE2BIG
/// when a table overflows its bounded array in BootInfo; on failure `*err`
/// (when err is not null) points to a message naming what is wrong, e.g.
/// "fdt: property length beyond struct block at offset 0x1234" (offsets are
/// from the start of the blob). The message lives in static storage valid
/// until the next call that fails: not reentrant, meant for the boot CPU.
/// `*out` is unspecified on failure.
int parse(const void* blob, u64 max_size, BootInfo* out, const char** err);

/// Writes into `dst` (`dst_size` bytes) a copy of the valid blob `src` (at
/// most `src_max` bytes readable) with /memreserve/ entries `add[0..n)`
/// appended to its reservation block (`no_map` is ignored: the block has no
/// flags). The output is compact: header, reservation block, struct block,
/// strings block, with the header offsets, totalsize and version (17, last
/// compatible 16) rewritten; free space after the blocks in `src` is dropped.
/// Returns the new total size, -kE2BIG when `dst` is too small, or -kEINVAL
/// when `src` is invalid, an added entry has size 0, or the buffers overlap.
s64 add_memreserve(const void* src, u64 src_max, void* dst, u64 dst_size, const Reserved* add, u32 n);

/// totalsize from the header of `blob` (at most `max_size` bytes readable),
/// or 0 when the header or its block layout is not valid. Does not walk the
/// struct block.
u64 total_size(const void* blob, u64 max_size);

/// Finds property `name` of the first node matching the absolute `path`
/// ("/" for the root; a component without '@' matches a node name up to its
/// '@', e.g. "/memory" matches "memory@40000000"). Returns a pointer into
/// the blob and sets `*len` (when len is not null) to the value length, or
/// returns nullptr when the header is invalid, the walk up to the node meets
/// malformed data, or the node or property does not exist.
const void* get_prop(const void* blob, u64 max_size, const char* path, const char* name, u32* len);

}  // namespace pkvm::fdt
