// SPDX-License-Identifier: Apache-2.0
// pkvmctl: the userspace tool for /dev/pkvm-host. Shared declarations.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#ifndef PKVM_TEST_CALLS
#define PKVM_TEST_CALLS
#endif
#include "pkvm_abi.h"
#include "pkvm_host_ioctl.h"

namespace pkvmctl {

// The uapi and ABI headers use unsigned long long for 64-bit values.
using u8 = uint8_t;
using u32 = uint32_t;
using u64 = unsigned long long;
using s64 = long long;
static_assert(sizeof(u64) == 8 && sizeof(s64) == 8);

inline constexpr u64 kPage = PKVM_PAGE_SIZE;
inline constexpr u64 kMaxPages = PKVM_MAX_TRANSITION_PAGES;

// --- Names --------------------------------------------------------------------------

/// ABI call name for function number fn, or nullptr.
const char* call_name(u32 fn);
/// Function number of a call name (e.g. "host_share_hyp"), or -1.
int call_fn(const std::string& name);
/// "0", "EPERM", ..., "NOT_SUPPORTED" or the number for an x0 value.
std::string ret_name(s64 ret);
/// x0 for an errno name ("EPERM", "0", "NOT_SUPPORTED"), false if unknown.
bool parse_ret(const std::string& name, s64* ret);
/// One-line meaning of an x0 value, from the ABI's errno table.
const char* ret_meaning(s64 ret);
/// "host", "hyp", "guest3".
std::string owner_name(u32 owner);
/// "owned", "shared-owned", "shared-borrowed".
const char* state_name(u32 state);
/// "1G", "2M", "4K", "-" (not mapped) for a dump record's level.
const char* level_name(u32 level);
/// strerror-like name of a Linux errno ("EINVAL").
std::string errno_name(int e);

// --- The device ---------------------------------------------------------------------

/// One hypercall through PKVM_IOC_CALL.
struct Call {
  u32 fn = 0;
  bool raw = false;  ///< pfn is raw; otherwise buf + page
  u32 buf = 0;
  u64 page = 0;  ///< page index into buf
  u64 pfn = 0;
  u64 nr = 0;
  u64 guest = 0;
  u64 gfn = 0;
  u64 start_pfn = 0;
  u64 count = 0;
  u32 repeat = 0;
};

struct CallResult {
  int err = 0;  ///< errno of the ioctl itself (0: the hypercall was issued)
  s64 ret = 0;  ///< x0
  u64 res[3] = {0, 0, 0};
  u64 done = 0;
  u64 pfn = 0;  ///< the pfn passed to the hypervisor
};

class Device {
 public:
  Device() = default;
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  /// Opens /dev/pkvm-host; on failure prints why and returns false.
  bool open();
  int fd() const { return fd_; }
  /// ioctl(); returns 0 or the errno.
  int ioctl(unsigned long req, void* arg) const;

  CallResult call(const Call& c) const;
  int info(pkvm_ioc_info* out) const;
  /// Allocates a test buffer; returns its id or 0 (errno in *err).
  u32 alloc(u64 nr_pages, u64* pfn, int* err = nullptr) const;
  int free_buf(u32 id) const;
  int query(u32 id, u64* nr_pages, u64* pfn) const;
  int stats(pkvm_ioc_stats* out, bool baseline = false) const;
  int ktouch(u32 buf, u64 offset, bool write, bool plain, u64* value, u32* outcome, u64* esr) const;

 private:
  int fd_ = -1;
};

// --- The host stage-2 dump -------------------------------------------------------------

struct Run {
  u64 start;  ///< first pfn
  u64 nr;     ///< pages
  u32 owner;
  u32 state;
  u32 level;  ///< 0: not mapped
};

/// Every record from start_pfn on, in order; false (errno in *err) on failure.
bool read_dump(const Device& d, std::vector<Run>* out, int* err = nullptr, u64 start_pfn = 0);
/// Ownership view: merged runs that differ from the default (host, owned),
/// ignoring the mapping level. Equal views mean "no ownership changed".
std::vector<Run> ownership(const std::vector<Run>& runs);
/// Owner and state of pfn (host/owned when no record covers it).
void page_state(const std::vector<Run>& runs, u64 pfn, u32* owner, u32* state);
/// Prints the readable table (the lines dump_svg parses). Runs inside
/// [note_pfn, note_pfn + note_nr) are marked as the module's dump buffer.
void print_dump(FILE* f, const std::vector<Run>& runs, u64 note_pfn = 0, u64 note_nr = 0);
/// Removes the module's own dump buffer (shared while the dump ran) from runs.
std::vector<Run> without(const std::vector<Run>& runs, u64 pfn, u64 nr);

// --- Memory access --------------------------------------------------------------------

/// A test buffer mapped into this process.
class Mapping {
 public:
  Mapping() = default;
  ~Mapping();
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  bool map(const Device& d, u32 buf, u64 nr_pages);
  void unmap();
  volatile u64* word(u64 page, u64 index = 0) const {
    return reinterpret_cast<volatile u64*>(static_cast<char*>(addr_) + page * kPage) + index;
  }
  void* page_ptr(u64 page) const { return static_cast<char*>(addr_) + page * kPage; }

 private:
  void* addr_ = nullptr;
  size_t len_ = 0;
};

struct Touch {
  bool refused = false;  ///< the access raised SIGBUS
  int si_code = 0;
  u64 addr = 0;
  u64 value = 0;
};
/// Reads (or writes `value` to) *p, catching the SIGBUS of a refused access.
/// Thread-safe: each thread has its own recovery point.
Touch touch(volatile u64* p, bool write, u64 value = 0);
/// Same for a whole page: fills it with pattern(seed) or reads it all.
Touch touch_page(void* page, bool write, u64 seed, u64* sum_out = nullptr);

/// Word i of the fill pattern for seed (seed 0 = all zero).
inline u64 pattern_word(u64 seed, u64 i) { return seed ? (seed * 0x9e3779b97f4a7c15ull) ^ (i * 0x100000001b3ull) : 0; }
/// FNV-1a over 64-bit words, as the checksum hypercall (docs/abi.md).
u64 fnv1a_words(const volatile u64* w, u64 nwords, u64 h = 0xcbf29ce484222325ull);
u64 fnv1a_pattern(u64 seed, u64 h = 0xcbf29ce484222325ull);
inline constexpr u64 kFnvInit = 0xcbf29ce484222325ull;

// --- Time -------------------------------------------------------------------------------

inline u64 cntvct() {
  u64 v;
  asm volatile("isb; mrs %0, cntvct_el0" : "=r"(v)::"memory");
  return v;
}
inline u64 cntfrq() {
  u64 v;
  asm volatile("mrs %0, cntfrq_el0" : "=r"(v));
  return v;
}

// --- Platform facts a test needs ------------------------------------------------------------

struct Platform {
  u64 ram_start_pfn = 0, ram_end_pfn = 0;  ///< System RAM span (end exclusive)
  u64 kernel_pfn = 0;                      ///< a page of the kernel image ("Kernel code")
  u64 mmio_pfn = 0;                        ///< a device page outside RAM
  u64 hyp_pfn = 0;                         ///< a page the hypervisor owns (from the dump)
  bool ok = false;
};
Platform probe_platform(const Device& d);

// --- Test reporting ---------------------------------------------------------------------------

/// Prints "PKVMTEST: ok SUITE/NAME" or "PKVMTEST: FAIL SUITE/NAME: why".
class Reporter {
 public:
  explicit Reporter(std::string suite) : suite_(std::move(suite)) {}
  bool check(const std::string& name, bool ok, const std::string& why = "");
  void skip(const std::string& name, const std::string& why);
  int passed() const { return passed_; }
  int failed() const { return failed_; }
  /// Prints the suite's summary line; returns the exit code (0: all passed).
  int finish();

 private:
  std::string suite_;
  int passed_ = 0, failed_ = 0, skipped_ = 0;
};

std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// --- Shared by the test commands ----------------------------------------------------------------

/// Brings every page of buffer `buf` back to the host alone (unpins,
/// unshares, reclaims; destroys the guests the module created). Returns true
/// when the whole buffer is the host's again.
bool restore_buffer(const Device& d, u32 buf);

// --- Commands (each returns the process exit code) -------------------------------------------------
int cmd_selftest(int argc, char** argv);
int cmd_fuzz(int argc, char** argv);
int cmd_stress(int argc, char** argv);
int cmd_bench(int argc, char** argv);

}  // namespace pkvmctl
