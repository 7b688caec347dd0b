// SPDX-License-Identifier: Apache-2.0
// pkvmctl: the device wrapper, names, dump decoding, guarded memory access
// and test reporting shared by every command.
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <fstream>
#include <sstream>

#include "pkvmctl.h"

namespace pkvmctl {

// --- Names --------------------------------------------------------------------------

namespace {

struct CallName {
  const char* name;
  u32 fn;
};

constexpr CallName kCalls[] = {
#define PKVMCTL_CALL(name, NAME, n) {#name, n},
    PKVM_HC_FOR_EACH_CALL(PKVMCTL_CALL) PKVM_HC_FOR_EACH_TEST_CALL(PKVMCTL_CALL)
#undef PKVMCTL_CALL
};

struct ErrName {
  int e;
  const char* name;
  const char* meaning;
};

// The ABI's errno table (docs/abi.md); values from pkvm_abi.h.
constexpr ErrName kErrs[] = {
    {PKVM_EPERM, "EPERM", "a page is not in the owner or state the call requires"},
    {PKVM_ENOENT, "ENOENT", "no such guest"},
    {PKVM_E2BIG, "E2BIG", "the range is longer than 512 pages"},
    {PKVM_EAGAIN, "EAGAIN", "the call raced with another update of the same pages"},
    {PKVM_ENOMEM, "ENOMEM", "the hypervisor is out of page-table pages or guest slots"},
    {PKVM_EFAULT, "EFAULT", "a page is not memory the hypervisor manages"},
    {PKVM_EBUSY, "EBUSY", "a page is pinned by the hypervisor (or the guest is alive)"},
    {PKVM_EEXIST, "EEXIST", "a guest frame is already mapped"},
    {PKVM_EINVAL, "EINVAL", "bad arguments: nr is 0, the range wraps or is not RAM the host may give away"},
    {PKVM_ERANGE, "ERANGE", "a value does not fit its field"},
};

}  // namespace

const char* call_name(u32 fn) {
  for (const CallName& c : kCalls)
    if (c.fn == fn) return c.name;
  return nullptr;
}

int call_fn(const std::string& name) {
  for (const CallName& c : kCalls)
    if (name == c.name) return int(c.fn);
  return -1;
}

std::string ret_name(s64 ret) {
  if (ret == 0) return "0";
  // -1 is both EPERM and SMCCC NOT_SUPPORTED; callers that know the id was
  // unknown print NOT_SUPPORTED themselves.
  for (const ErrName& e : kErrs)
    if (ret == -e.e) return e.name;
  return std::to_string(ret);
}

bool parse_ret(const std::string& name, s64* ret) {
  if (name == "0" || name == "ok") {
    *ret = 0;
    return true;
  }
  if (name == "NOT_SUPPORTED") {
    *ret = PKVM_SMCCC_RET_NOT_SUPPORTED;
    return true;
  }
  for (const ErrName& e : kErrs)
    if (name == e.name) {
      *ret = -e.e;
      return true;
    }
  return false;
}

const char* ret_meaning(s64 ret) {
  if (ret == 0) return "success";
  for (const ErrName& e : kErrs)
    if (ret == -e.e) return e.meaning;
  return "not an ABI errno";
}

std::string owner_name(u32 owner) {
  if (owner == PKVM_OWNER_HOST) return "host";
  if (owner == PKVM_OWNER_HYP) return "hyp";
  return "guest" + std::to_string(owner);
}

const char* state_name(u32 state) {
  switch (state) {
    case PKVM_PAGE_OWNED:
      return "owned";
    case PKVM_PAGE_SHARED_OWNED:
      return "shared-owned";
    case PKVM_PAGE_SHARED_BORROWED:
      return "shared-borrowed";
  }
  return "state3";
}

const char* level_name(u32 level) {
  switch (level) {
    case 1:
      return "1G";
    case 2:
      return "2M";
    case 3:
      return "4K";
  }
  return "-";
}

std::string errno_name(int e) {
  switch (e) {
    case 0:
      return "0";
    case EPERM:
      return "EPERM";
    case ENOENT:
      return "ENOENT";
    case E2BIG:
      return "E2BIG";
    case EFAULT:
      return "EFAULT";
    case EBUSY:
      return "EBUSY";
    case EINVAL:
      return "EINVAL";
    case ENOMEM:
      return "ENOMEM";
    case EACCES:
      return "EACCES";
    case ENOTTY:
      return "ENOTTY";
    case EOPNOTSUPP:
      return "EOPNOTSUPP";
    case ERANGE:
      return "ERANGE";
    case ENODEV:
      return "ENODEV";
  }
  return "errno" + std::to_string(e);
}

std::string strf(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

// --- Device -----------------------------------------------------------------------------

Device::~Device() {
  if (fd_ >= 0) ::close(fd_);
}

bool Device::open() {
  fd_ = ::open(PKVM_HOST_DEVICE, O_RDWR | O_CLOEXEC);
  if (fd_ < 0) {
    fprintf(stderr, "pkvmctl: cannot open %s: %s%s\n", PKVM_HOST_DEVICE, strerror(errno),
            errno == ENOENT ? " (is pkvm_host.ko loaded?)" : "");
    return false;
  }
  return true;
}

int Device::ioctl(unsigned long req, void* arg) const { return ::ioctl(fd_, req, arg) == 0 ? 0 : errno; }

CallResult Device::call(const Call& c) const {
  pkvm_ioc_call io{};
  io.fn = c.fn;
  io.flags = c.raw ? PKVM_CALL_RAW : 0;
  io.buf = c.buf;
  io.repeat = c.repeat;
  io.offset = c.page * kPage;
  io.pfn = c.pfn;
  io.nr = c.nr;
  io.guest = c.guest;
  io.gfn = c.gfn;
  io.start_pfn = c.start_pfn;
  io.count = c.count;
  CallResult r;
  r.err = ioctl(PKVM_IOC_CALL, &io);
  if (r.err) return r;
  r.ret = io.ret;
  for (int i = 0; i < 3; ++i) r.res[i] = io.res[i];
  r.done = io.done;
  r.pfn = io.pfn;
  return r;
}

int Device::info(pkvm_ioc_info* out) const {
  *out = {};
  return ioctl(PKVM_IOC_INFO, out);
}

u32 Device::alloc(u64 nr_pages, u64* pfn, int* err) const {
  pkvm_ioc_buf b{};
  b.nr_pages = nr_pages;
  const int e = ioctl(PKVM_IOC_BUF_ALLOC, &b);
  if (err) *err = e;
  if (e) return 0;
  if (pfn) *pfn = b.pfn;
  return b.id;
}

int Device::free_buf(u32 id) const {
  pkvm_ioc_buf b{};
  b.id = id;
  return ioctl(PKVM_IOC_BUF_FREE, &b);
}

int Device::query(u32 id, u64* nr_pages, u64* pfn) const {
  pkvm_ioc_buf b{};
  b.id = id;
  const int e = ioctl(PKVM_IOC_BUF_QUERY, &b);
  if (!e) {
    if (nr_pages) *nr_pages = b.nr_pages;
    if (pfn) *pfn = b.pfn;
  }
  return e;
}

int Device::stats(pkvm_ioc_stats* out, bool baseline) const {
  *out = {};
  out->flags = baseline ? PKVM_STATS_BASELINE : 0;
  return ioctl(PKVM_IOC_GET_STATS, out);
}

int Device::ktouch(u32 buf, u64 offset, bool write, bool plain, u64* value, u32* outcome, u64* esr) const {
  pkvm_ioc_ktouch k{};
  k.buf = buf;
  k.offset = offset;
  k.flags = (write ? PKVM_KTOUCH_WRITE : 0) | (plain ? PKVM_KTOUCH_PLAIN : 0);
  k.value = *value;
  const int e = ioctl(PKVM_IOC_KTOUCH, &k);
  if (!e) {
    *value = k.value;
    *outcome = k.outcome;
    if (esr) *esr = k.esr;
  }
  return e;
}

// --- Dump ---------------------------------------------------------------------------------

bool read_dump(const Device& d, std::vector<Run>* out, int* err, u64 start_pfn) {
  out->clear();
  std::vector<u64> recs(8192);
  pkvm_ioc_dump io{};
  io.start_pfn = start_pfn;
  for (;;) {
    io.records = reinterpret_cast<u64>(recs.data());
    io.max_records = u32(recs.size());
    const int e = d.ioctl(PKVM_IOC_DUMP, &io);
    if (e) {
      if (err) *err = e;
      return false;
    }
    for (u32 i = 0; i < io.nr_records; ++i) {
      const u64 w = recs[i];
      out->push_back(Run{pkvm_dump_record_start_pfn(w), pkvm_dump_record_nr_pages(w), u32(pkvm_dump_record_owner(w)),
                         u32(pkvm_dump_record_state(w)), u32(pkvm_dump_record_level(w))});
    }
    if (io.done || io.nr_records == 0) break;
    io.start_pfn = io.next_pfn;
    io.nr_records = 0;
  }
  return true;
}

std::vector<Run> ownership(const std::vector<Run>& runs) {
  std::vector<Run> v;
  for (const Run& r : runs) {
    if (r.owner == PKVM_OWNER_HOST && r.state == PKVM_PAGE_OWNED) continue;
    if (!v.empty()) {
      Run& l = v.back();
      if (l.start + l.nr == r.start && l.owner == r.owner && l.state == r.state) {
        l.nr += r.nr;
        continue;
      }
    }
    v.push_back(Run{r.start, r.nr, r.owner, r.state, 0});
  }
  return v;
}

void page_state(const std::vector<Run>& runs, u64 pfn, u32* owner, u32* state) {
  *owner = PKVM_OWNER_HOST;
  *state = PKVM_PAGE_OWNED;
  for (const Run& r : runs) {
    if (pfn >= r.start && pfn - r.start < r.nr) {
      *owner = r.owner;
      *state = r.state;
      return;
    }
  }
}

std::vector<Run> without(const std::vector<Run>& runs, u64 pfn, u64 nr) {
  std::vector<Run> v;
  for (const Run& r : runs) {
    if (r.start >= pfn && r.start + r.nr <= pfn + nr) continue;
    v.push_back(r);
  }
  return v;
}

void print_dump(FILE* f, const std::vector<Run>& runs, u64 note_pfn, u64 note_nr) {
  u64 pages = 0;
  for (const Run& r : runs) pages += r.nr;
  fprintf(f, "S2-BEGIN host stage-2: %zu runs, %llu pages described (pages in the default state, "
             "host-owned and not mapped yet, are left out)\n",
          runs.size(), (unsigned long long)pages);
  fprintf(f, "S2 %-16s %-16s %10s %-8s %-16s %s\n", "START", "END", "PAGES", "OWNER", "STATE", "MAP");
  for (const Run& r : runs)
    fprintf(f, "S2 0x%014llx 0x%014llx %10llu %-8s %-16s %-3s%s\n", (unsigned long long)(r.start * kPage),
            (unsigned long long)((r.start + r.nr) * kPage), (unsigned long long)r.nr, owner_name(r.owner).c_str(),
            state_name(r.state), level_name(r.level),
            note_nr && r.start >= note_pfn && r.start + r.nr <= note_pfn + note_nr
                ? "  (pkvm_host's dump buffer, shared while this dump ran)"
                : "");
  fprintf(f, "S2-END\n");
}

// --- Mappings and guarded access -------------------------------------------------------------

Mapping::~Mapping() { unmap(); }

void Mapping::unmap() {
  if (addr_) munmap(addr_, len_);
  addr_ = nullptr;
}

bool Mapping::map(const Device& d, u32 buf, u64 nr_pages) {
  len_ = nr_pages * kPage;
  void* p = mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_SHARED, d.fd(), off_t(u64(buf) << PKVM_MMAP_ID_SHIFT));
  if (p == MAP_FAILED) {
    addr_ = nullptr;
    return false;
  }
  addr_ = p;
  return true;
}

namespace {

thread_local sigjmp_buf t_jmp;
thread_local volatile sig_atomic_t t_armed = 0;
thread_local int t_code = 0;
thread_local u64 t_addr = 0;

void on_sigbus(int sig, siginfo_t* si, void*) {
  if (!t_armed) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  t_armed = 0;
  t_code = si->si_code;
  t_addr = reinterpret_cast<u64>(si->si_addr);
  siglongjmp(t_jmp, 1);
}

void install_handler() {
  static bool done = false;
  if (done) return;
  struct sigaction sa{};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  done = true;
}

}  // namespace

Touch touch(volatile u64* p, bool write, u64 value) {
  install_handler();
  Touch t;
  if (sigsetjmp(t_jmp, 1)) {
    t.refused = true;
    t.si_code = t_code;
    t.addr = t_addr;
    return t;
  }
  t_armed = 1;
  if (write)
    *p = value;
  else
    t.value = *p;
  t_armed = 0;
  return t;
}

Touch touch_page(void* page, bool write, u64 seed, u64* sum_out) {
  install_handler();
  Touch t;
  volatile u64* w = static_cast<volatile u64*>(page);
  if (sigsetjmp(t_jmp, 1)) {
    t.refused = true;
    t.si_code = t_code;
    t.addr = t_addr;
    return t;
  }
  t_armed = 1;
  if (write) {
    for (u64 i = 0; i < kPage / 8; ++i) w[i] = pattern_word(seed, i);
  } else {
    u64 h = kFnvInit;
    for (u64 i = 0; i < kPage / 8; ++i) h = (h ^ w[i]) * 0x100000001b3ull;
    t.value = w[0];
    if (sum_out) *sum_out = h;
  }
  t_armed = 0;
  return t;
}

u64 fnv1a_words(const volatile u64* w, u64 nwords, u64 h) {
  for (u64 i = 0; i < nwords; ++i) h = (h ^ w[i]) * 0x100000001b3ull;
  return h;
}

u64 fnv1a_pattern(u64 seed, u64 h) {
  for (u64 i = 0; i < kPage / 8; ++i) h = (h ^ pattern_word(seed, i)) * 0x100000001b3ull;
  return h;
}

// --- Platform --------------------------------------------------------------------------------

Platform probe_platform(const Device& d) {
  Platform p;
  std::ifstream in("/proc/iomem");
  std::string line;
  u64 mmio = 0;
  while (std::getline(in, line)) {
    unsigned long long a = 0, b = 0;
    if (sscanf(line.c_str(), " %llx-%llx", &a, &b) != 2) continue;
    const bool top = !line.empty() && line[0] != ' ';
    if (line.find("System RAM") != std::string::npos && top) {
      if (!p.ram_start_pfn || a / kPage < p.ram_start_pfn) p.ram_start_pfn = a / kPage;
      if ((b + 1) / kPage > p.ram_end_pfn) p.ram_end_pfn = (b + 1) / kPage;
    } else if (line.find("Kernel code") != std::string::npos && !p.kernel_pfn) {
      p.kernel_pfn = (a + kPage - 1) / kPage;
    } else if (top && !mmio && line.find("reserved") == std::string::npos) {
      mmio = a / kPage;
    }
  }
  p.mmio_pfn = mmio ? mmio : 0x9000000 / kPage;  // PL011 on QEMU virt
  std::vector<Run> runs;
  if (read_dump(d, &runs)) {
    for (const Run& r : runs)
      if (r.owner == PKVM_OWNER_HYP && r.state == PKVM_PAGE_OWNED) {
        p.hyp_pfn = r.start;
        break;
      }
  }
  p.ok = p.ram_end_pfn && p.kernel_pfn && p.hyp_pfn;
  return p;
}

// --- Reporter -----------------------------------------------------------------------------------

bool Reporter::check(const std::string& name, bool ok, const std::string& why) {
  if (ok) {
    ++passed_;
    printf("PKVMTEST: ok %s/%s\n", suite_.c_str(), name.c_str());
  } else {
    ++failed_;
    printf("PKVMTEST: FAIL %s/%s: %s\n", suite_.c_str(), name.c_str(), why.c_str());
  }
  fflush(stdout);
  return ok;
}

void Reporter::skip(const std::string& name, const std::string& why) {
  ++skipped_;
  printf("PKVMTEST: skip %s/%s: %s\n", suite_.c_str(), name.c_str(), why.c_str());
  fflush(stdout);
}

int Reporter::finish() {
  printf("PKVMTEST: suite %s: %d passed, %d failed, %d skipped\n", suite_.c_str(), passed_, failed_, skipped_);
  fflush(stdout);
  return failed_ ? 1 : 0;
}

// --- Restoring a buffer -----------------------------------------------------------------------------

bool restore_buffer(const Device& d, u32 buf) {
  u64 nr = 0, pfn = 0;
  if (d.query(buf, &nr, &pfn)) return false;
  pkvm_ioc_info info;
  if (!d.info(&info)) {
    for (u32 g = PKVM_OWNER_FIRST_GUEST; g < 32; ++g) {
      if (!(info.guests & (1u << g))) continue;
      Call c;
      c.fn = PKVM_HC_GUEST_DESTROY_FN;
      c.guest = g;
      d.call(c);
    }
  }
  std::vector<Run> runs;
  if (!read_dump(d, &runs, nullptr, pfn)) return false;
  for (u64 p = pfn; p < pfn + nr; ++p) {
    u32 owner, state;
    page_state(runs, p, &owner, &state);
    Call c;
    c.raw = true;
    c.pfn = p;
    c.nr = 1;
    if (owner == PKVM_OWNER_HOST && state == PKVM_PAGE_SHARED_OWNED) {
      c.fn = PKVM_HC_HYP_UNPIN_SHARED_FN;
      c.repeat = 65536;
      d.call(c);
      c.repeat = 0;
      c.fn = PKVM_HC_HOST_UNSHARE_HYP_FN;
      d.call(c);
    } else if (owner == PKVM_OWNER_HYP) {
      c.fn = PKVM_HC_HYP_DONATE_HOST_FN;
      d.call(c);
    } else if (owner >= PKVM_OWNER_FIRST_GUEST) {
      c.fn = PKVM_HC_HOST_RECLAIM_GUEST_FN;
      c.guest = owner;
      d.call(c);
    }
  }
  if (!read_dump(d, &runs, nullptr, pfn)) return false;
  for (u64 p = pfn; p < pfn + nr; ++p) {
    u32 owner, state;
    page_state(runs, p, &owner, &state);
    if (owner != PKVM_OWNER_HOST || state != PKVM_PAGE_OWNED) return false;
  }
  return true;
}

}  // namespace pkvmctl
