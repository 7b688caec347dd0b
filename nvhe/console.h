// SPDX-License-Identifier: Apache-2.0
// EL2 console on a PL011 UART: every line carries the "[pkvm] " prefix so the
// hypervisor's output is told apart from the host's on the shared UART.
#pragma once

#include "pgtable/types.h"

namespace pkvm::con {

/// Points the console at a PL011 at `base` (0 disables output).
void init(u64 base);
/// True when verbose output was asked for (build option or DTB property).
bool verbose();
/// Turns verbose output on or off.
void set_verbose(bool on);
/// printf-style output of one or more whole lines, prefixed "[pkvm] ".
/// Supports %s %c %d %u %x with l/ll modifiers, %p, and %%.
void printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
/// Like printf, only when verbose.
#define PKVM_VLOG(...)                                 \
  do {                                                 \
    if (::pkvm::con::verbose()) ::pkvm::con::printf(__VA_ARGS__); \
  } while (0)

/// Formats into `buf` (always NUL-terminated); returns the length written.
u32 format(char* buf, u32 size, const char* fmt, __builtin_va_list ap);

}  // namespace pkvm::con
