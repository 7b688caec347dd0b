// SPDX-License-Identifier: Apache-2.0
#include "nvhe/console.h"

#include "nvhe/sync.h"

namespace pkvm::con {

namespace {

constexpr u64 kUartDr = 0x00;
constexpr u64 kUartFr = 0x18;
constexpr u32 kFrTxff = 1u << 5;

u64 g_base;
#ifdef PKVM_VERBOSE
bool g_verbose = true;
#else
bool g_verbose = false;
#endif
SpinLock g_lock;

void putc_raw(char c) {
  if (!g_base) return;
  auto* fr = reinterpret_cast<volatile u32*>(g_base + kUartFr);
  auto* dr = reinterpret_cast<volatile u32*>(g_base + kUartDr);
  while (*fr & kFrTxff) {
  }
  *dr = u32(u8(c));
}

struct Out {
  char* buf;
  u32 size;
  u32 len;
  void put(char c) {
    if (len + 1 < size) buf[len] = c;
    ++len;
  }
};

void put_num(Out& o, u64 v, u32 base, bool neg) {
  char tmp[24];
  u32 n = 0;
  do {
    const u32 d = u32(v % base);
    tmp[n++] = char(d < 10 ? '0' + d : 'a' + d - 10);
    v /= base;
  } while (v);
  if (neg) o.put('-');
  while (n) o.put(tmp[--n]);
}

}  // namespace

void init(u64 base) { g_base = base; }
bool verbose() { return g_verbose; }
void set_verbose(bool on) { g_verbose = on; }

u32 format(char* buf, u32 size, const char* fmt, __builtin_va_list ap) {
  Out o{buf, size, 0};
  for (const char* p = fmt; *p; ++p) {
    if (*p != '%') {
      o.put(*p);
      continue;
    }
    ++p;
    u32 longs = 0;
    while (*p == 'l') {
      ++longs;
      ++p;
    }
    switch (*p) {
      case 'd': {
        const s64 v = longs ? __builtin_va_arg(ap, long long) : __builtin_va_arg(ap, int);
        put_num(o, v < 0 ? u64(-v) : u64(v), 10, v < 0);
        break;
      }
      case 'u':
        put_num(o, longs ? __builtin_va_arg(ap, unsigned long long) : __builtin_va_arg(ap, unsigned), 10, false);
        break;
      case 'x':
        put_num(o, longs ? __builtin_va_arg(ap, unsigned long long) : __builtin_va_arg(ap, unsigned), 16, false);
        break;
      case 'p':
        o.put('0');
        o.put('x');
        put_num(o, u64(__builtin_va_arg(ap, void*)), 16, false);
        break;
      case 's': {
        const char* s = __builtin_va_arg(ap, const char*);
        for (s = s ? s : "(null)"; *s; ++s) o.put(*s);
        break;
      }
      case 'c':
        o.put(char(__builtin_va_arg(ap, int)));
        break;
      case '%':
        o.put('%');
        break;
      default:
        o.put('?');
        if (!*p) --p;
        break;
    }
  }
  if (size) buf[o.len < size ? o.len : size - 1] = 0;
  return o.len;
}

void printf(const char* fmt, ...) {
  char buf[256];
  __builtin_va_list ap;
  __builtin_va_start(ap, fmt);
  format(buf, sizeof(buf), fmt, ap);
  __builtin_va_end(ap);
  // One line at a time under the lock: CPUs never interleave mid-line.
  SpinGuard g(g_lock);
  bool start = true;
  for (const char* s = buf; *s; ++s) {
    if (start) {
      for (const char* q = "[pkvm] "; *q; ++q) putc_raw(*q);
      start = false;
    }
    if (*s == '\n') {
      putc_raw('\r');
      start = true;
    }
    putc_raw(*s);
  }
}

}  // namespace pkvm::con
