// SPDX-License-Identifier: Apache-2.0
// pkvmctl: command-line front end of /dev/pkvm-host (the pkvm_host module).
// Static aarch64 binary for the test initramfs; `pkvmctl --help` lists the
// commands and `pkvmctl COMMAND --help` describes one.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "args.h"
#include "pkvmctl.h"

namespace pkvmctl {
namespace {

constexpr const char* kUsage =
    "usage: pkvmctl COMMAND [OPTIONS]   (COMMAND --help for details)\n"
    "\n"
    "Inspect and drive the pKVM-style hypervisor through /dev/pkvm-host.\n"
    "\n"
    "  info       hypervisor ABI version, test calls, module state\n"
    "  stats      the hypervisor's statistics and the module's call counts\n"
    "  dump       the host stage-2 as a table of ranges (owner, state, block size)\n"
    "  alloc      allocate a test buffer owned by the module\n"
    "  free       free a test buffer (only when all its pages are the host's)\n"
    "  buffer     show a test buffer's pages and their states\n"
    "  fill       write a pattern into a test buffer page (userspace mapping)\n"
    "  share      share pages with the hypervisor or a guest\n"
    "  unshare    end a share with the hypervisor or a guest\n"
    "  donate     give pages to the hypervisor or a guest\n"
    "  reclaim    take donated pages back from the hypervisor or a dead guest\n"
    "  pin        pin / unpin pages shared with the hypervisor\n"
    "  unpin\n"
    "  checksum   the hypervisor's checksum of pages, compared with the host's view\n"
    "  guest      create / destroy guests; guest-side share-host / unshare-host (test builds)\n"
    "  call       issue any ABI call with raw arguments (hostile input for tests)\n"
    "  touch      read or write a test buffer page from userspace; reports a refusal\n"
    "  ktouch     the same access from a kernel thread (refusals oops that thread only)\n"
    "  selftest   in-guest test suite of every transition and bad input\n"
    "  fuzz       random valid and hostile transitions checked against a model\n"
    "  stress     concurrent transitions and memory traffic on several CPUs\n"
    "  bench      hypercall round-trip costs, as ratios to the null hypercall\n";

int usage_error(const char* cmd, const std::string& msg) {
  fprintf(stderr, "pkvmctl %s: %s (see pkvmctl %s --help)\n", cmd, msg.c_str(), cmd);
  return 1;
}

// --- Page arguments shared by the transition commands ----------------------------------

constexpr const char* kPagesHelp =
    "  Pages: --buf ID [--page N] (a test buffer, page N, default 0) or --pfn PFN\n"
    "         (raw page number: hostile input; the module refuses raw donations of\n"
    "         kernel memory with EACCES). --nr N pages (default 1).\n"
    "  --expect X   exit 0 only if the hypervisor answers X (0, EPERM, EINVAL, ...)\n";

const std::set<std::string> kPageOpts = {"buf", "page", "pfn", "nr", "guest", "gfn", "expect", "repeat"};

bool page_args(const Args& a, const char* cmd, Call* c) {
  if (a.has("pfn") == a.has("buf")) {
    usage_error(cmd, "give exactly one of --buf ID or --pfn PFN");
    return false;
  }
  if (a.has("pfn")) {
    c->raw = true;
    c->pfn = a.num("pfn");
  } else {
    c->buf = u32(a.num("buf"));
    c->page = a.num("page");
  }
  c->nr = a.num("nr", 1);
  c->repeat = u32(a.num("repeat", 0));
  return true;
}

/// "name(guest=2 pfn=0x44000 gfn=0x10 nr=1)" with the arguments the call takes.
std::string describe(const Call& c, u64 pfn) {
  const char* name = call_name(c.fn);
  std::string s = std::string(name ? name : "?") + "(";
  auto add = [&](const std::string& kv) { s += (s.back() == '(' ? "" : " ") + kv; };
  switch (c.fn) {
    case PKVM_HC_ABI_VERSION_FN:
    case PKVM_HC_NULL_FN:
    case PKVM_HC_GUEST_CREATE_FN:
      break;
    case PKVM_HC_GUEST_DESTROY_FN:
      add(strf("guest=%llu", c.guest));
      break;
    case PKVM_HC_INJECT_ALLOC_FAILURE_FN:
      add(strf("after=%llu count=%#llx", c.start_pfn, c.count));
      break;
    case PKVM_HC_HOST_UNSHARE_GUEST_FN:
    case PKVM_HC_GUEST_SHARE_HOST_FN:
    case PKVM_HC_GUEST_UNSHARE_HOST_FN:
      add(strf("guest=%llu gfn=%#llx nr=%llu", c.guest, c.gfn, c.nr));
      break;
    default:
      if (c.fn == PKVM_HC_HOST_SHARE_GUEST_FN || c.fn == PKVM_HC_HOST_DONATE_GUEST_FN ||
          c.fn == PKVM_HC_HOST_RECLAIM_GUEST_FN)
        add(strf("guest=%llu", c.guest));
      add(strf("pfn=%#llx", pfn));
      if (c.fn == PKVM_HC_HOST_SHARE_GUEST_FN || c.fn == PKVM_HC_HOST_DONATE_GUEST_FN) add(strf("gfn=%#llx", c.gfn));
      if (c.fn == PKVM_HC_DUMP_HOST_STAGE2_FN) add(strf("start_pfn=%#llx", c.start_pfn));
      if (c.fn != PKVM_HC_GET_STATS_FN) add(strf("nr=%llu", c.nr));
  }
  return s + ")";
}

/// Issues c and reports the outcome; the exit code honours --expect.
int run_call(const Device& d, const Args& a, const Call& c, bool unknown_id = false) {
  const CallResult r = d.call(c);
  const char* name = call_name(c.fn);
  if (r.err) {
    fprintf(stderr, "pkvmctl: %s: the module refused the request: %s (%s)\n", name ? name : "?", strerror(r.err),
            errno_name(r.err).c_str());
    return 1;
  }
  std::string rn = unknown_id && r.ret == PKVM_SMCCC_RET_NOT_SUPPORTED ? "NOT_SUPPORTED" : ret_name(r.ret);
  const std::string call = describe(c, c.raw ? c.pfn : r.pfn);
  if (r.ret == 0) {
    printf("%s: ok", call.c_str());
    if (c.repeat > 1) printf(" x%llu", (unsigned long long)r.done);
    printf(" [x1=%#llx x2=%#llx x3=%#llx]\n", (unsigned long long)r.res[0], (unsigned long long)r.res[1],
           (unsigned long long)r.res[2]);
  } else {
    printf("%s: refused by the hypervisor: %s (%s)", call.c_str(), rn.c_str(), ret_meaning(r.ret));
    if (c.repeat > 1) printf(" after %llu successful calls", (unsigned long long)r.done);
    printf("\n");
  }
  if (a.has("expect")) {
    s64 want;
    if (!parse_ret(a.str("expect"), &want)) return usage_error(name, "unknown --expect value " + a.str("expect"));
    if (want != r.ret) {
      printf("pkvmctl: expected %s, got %s\n", a.str("expect").c_str(), rn.c_str());
      return 3;
    }
    return 0;
  }
  return r.ret == 0 ? 0 : 2;
}

// --- Commands ------------------------------------------------------------------------------

int cmd_info(int argc, char** argv) {
  Args a(argc, argv, 2, {}, {});
  if (a.help()) {
    printf("usage: pkvmctl info\n  What pkvm_host found at load: the hypervisor's ABI version, whether it\n"
           "  has the test-only calls, and the module's buffers and guests.\n");
    return 0;
  }
  if (!a.error().empty()) return usage_error("info", a.error());
  Device d;
  if (!d.open()) return 1;
  pkvm_ioc_info i;
  if (int e = d.info(&i)) return usage_error("info", strerror(e));
  printf("hypervisor ABI:        %u.%u (module built for %u.%u)\n", i.abi_major, i.abi_minor, i.built_major,
         i.built_minor);
  printf("test-only calls:       %s\n", i.flags & PKVM_INFO_TEST_CALLS ? "yes (test build)" : "no (production build)");
  printf("page size:             %u\n", i.page_size);
  printf("max pages per call:    %u\n", i.max_transition_pages);
  printf("CPUs online:           %u\n", i.nr_cpus);
  printf("counter frequency:     %llu Hz\n", (unsigned long long)i.counter_freq);
  printf("test buffers:          %u\n", i.nr_buffers);
  printf("guests (via module):  ");
  bool any = false;
  for (u32 g = 0; g < 32; ++g)
    if (i.guests & (1u << g)) {
      printf(" %u", g);
      any = true;
    }
  printf("%s\n", any ? "" : " none");
  return 0;
}

void print_counts(const char* what, const u64* v, u64 n, bool by_fn) {
  bool any = false;
  for (u64 i = 0; i < n; ++i) {
    if (!v[i]) continue;
    if (!any) printf("%s:\n", what);
    any = true;
    if (by_fn) {
      const char* nm = call_name(u32(i));
      printf("  %-22s %llu\n", nm ? nm : std::to_string(i).c_str(), (unsigned long long)v[i]);
    } else {
      printf("  %-22s %llu\n", ret_name(-s64(i)).c_str(), (unsigned long long)v[i]);
    }
  }
}

int cmd_stats(int argc, char** argv) {
  Args a(argc, argv, 2, {}, {"check", "baseline"});
  if (a.help()) {
    printf("usage: pkvmctl stats [--check] [--baseline]\n"
           "  The hypervisor's statistics (get_stats, through a page the module shares for\n"
           "  the call): host stage-2 aborts by mapping level, TLB invalidations, table pages,\n"
           "  free pool pages, calls by function and errors by errno.\n"
           "  --check     verify that the hypervisor's counts since the module loaded equal\n"
           "              the module's own counts of the calls it issued (exit 1 otherwise)\n"
           "  --baseline  show the snapshot taken when the module loaded\n");
    return 0;
  }
  if (!a.error().empty()) return usage_error("stats", a.error());
  Device d;
  if (!d.open()) return 1;
  pkvm_ioc_stats s, base;
  if (int e = d.stats(&s, a.has("baseline"))) return usage_error("stats", strerror(e));
  const u64* sl = s.slots;
  printf("slots written:         %llu\n", (unsigned long long)sl[PKVM_STATS_SLOT_NR_SLOTS]);
  printf("host stage-2 aborts:   L0=%llu L1=%llu L2=%llu L3=%llu\n", (unsigned long long)sl[PKVM_STATS_SLOT_HOST_ABORTS],
         (unsigned long long)sl[PKVM_STATS_SLOT_HOST_ABORTS + 1], (unsigned long long)sl[PKVM_STATS_SLOT_HOST_ABORTS + 2],
         (unsigned long long)sl[PKVM_STATS_SLOT_HOST_ABORTS + 3]);
  printf("TLB invalidations:     %llu\n", (unsigned long long)sl[PKVM_STATS_SLOT_TLB_INVALIDATIONS]);
  printf("stage-2 table pages:   %llu\n", (unsigned long long)sl[PKVM_STATS_SLOT_TABLE_PAGES]);
  printf("free pool pages:       %llu\n", (unsigned long long)sl[PKVM_STATS_SLOT_POOL_FREE_PAGES]);
  print_counts("calls that succeeded", sl + PKVM_STATS_SLOT_CALLS_OK, 64, true);
  print_counts("calls that failed", sl + PKVM_STATS_SLOT_CALLS_FAILED, 64, true);
  print_counts("errors by errno", sl + PKVM_STATS_SLOT_ERRORS, 64, false);
  if (!a.has("check")) return 0;
  if (int e = d.stats(&base, true)) return usage_error("stats", strerror(e));
  int bad = 0;
  for (u32 i = 0; i < 64; ++i) {
    const struct {
      const char* what;
      u64 hyp, mod;
    } rows[] = {
        {"ok", sl[PKVM_STATS_SLOT_CALLS_OK + i] - base.slots[PKVM_STATS_SLOT_CALLS_OK + i],
         s.issued_ok[i] - base.issued_ok[i]},
        {"failed", sl[PKVM_STATS_SLOT_CALLS_FAILED + i] - base.slots[PKVM_STATS_SLOT_CALLS_FAILED + i],
         s.issued_failed[i] - base.issued_failed[i]},
        {"errno", sl[PKVM_STATS_SLOT_ERRORS + i] - base.slots[PKVM_STATS_SLOT_ERRORS + i],
         s.issued_errors[i] - base.issued_errors[i]},
    };
    for (const auto& r : rows)
      if (r.hyp != r.mod) {
        printf("MISMATCH %s[%u]: hypervisor counted %llu since load, the module issued %llu\n", r.what, i,
               (unsigned long long)r.hyp, (unsigned long long)r.mod);
        ++bad;
      }
  }
  printf("stats check: %s\n", bad ? "the counts do not add up" : "the hypervisor's counts equal the module's");
  return bad ? 1 : 0;
}

int cmd_dump(int argc, char** argv) {
  Args a(argc, argv, 2, {"start"}, {"raw", "ownership"});
  if (a.help()) {
    printf("usage: pkvmctl dump [--start PFN] [--ownership] [--raw]\n"
           "  The host stage-2 (dump_host_stage2, into pages the module shares for the call)\n"
           "  as a table of ranges: physical start/end, pages, owner (host, hyp, guestN),\n"
           "  state (owned, shared-owned, shared-borrowed) and the host mapping's block size\n"
           "  (1G, 2M, 4K; '-' when the host has no valid mapping). Lines start with \"S2 \"\n"
           "  so that tools/dump_svg can pick them out of a console log.\n"
           "  The module's own dump buffer is shared while the dump runs: its line says so.\n"
           "  --ownership  only ranges not owned by the host alone, merged across block sizes,\n"
           "               without the module's dump buffer\n"
           "  --raw        the raw 64-bit records\n");
    return 0;
  }
  if (!a.error().empty()) return usage_error("dump", a.error());
  Device d;
  if (!d.open()) return 1;
  std::vector<Run> runs;
  int err = 0;
  if (!read_dump(d, &runs, &err, a.num("start"))) return usage_error("dump", strerror(err));
  if (a.has("raw")) {
    for (const Run& r : runs)
      printf("%#018llx\n", (unsigned long long)pkvm_dump_record_pack(r.start, r.nr, r.owner, r.state, r.level));
    return 0;
  }
  pkvm_ioc_info info;
  if (d.info(&info)) info = {};
  if (a.has("ownership"))
    print_dump(stdout, ownership(without(runs, info.dump_pfn, info.dump_pages)));
  else
    print_dump(stdout, runs, info.dump_pfn, info.dump_pages);
  return 0;
}

int cmd_alloc(int argc, char** argv) {
  Args a(argc, argv, 2, {}, {});
  if (a.help() || a.pos().size() != 1) {
    printf("usage: pkvmctl alloc NR_PAGES\n  Allocates a physically contiguous, zeroed test buffer of NR_PAGES pages\n"
           "  (1..%d) owned by the module; prints its id and first pfn.\n",
           PKVM_HOST_BUF_MAX_PAGES);
    return a.help() ? 0 : 1;
  }
  Device d;
  if (!d.open()) return 1;
  u64 n, pfn = 0;
  if (!Args::parse_num(a.pos()[0], &n)) return usage_error("alloc", "not a number");
  int err = 0;
  const u32 id = d.alloc(n, &pfn, &err);
  if (!id) return usage_error("alloc", strerror(err));
  printf("buffer %u: %llu pages at pfn %#llx (phys %#llx)\n", id, (unsigned long long)n, (unsigned long long)pfn,
         (unsigned long long)(pfn * kPage));
  return 0;
}

int cmd_free(int argc, char** argv) {
  Args a(argc, argv, 2, {}, {"restore"});
  if (a.help() || a.pos().size() != 1) {
    printf("usage: pkvmctl free ID [--restore]\n  Frees test buffer ID. Refused (EBUSY) while a page is shared, donated or\n"
           "  pinned, or the buffer is mapped. --restore first brings every page back.\n");
    return a.help() ? 0 : 1;
  }
  Device d;
  if (!d.open()) return 1;
  u64 id;
  if (!Args::parse_num(a.pos()[0], &id)) return usage_error("free", "not a number");
  if (a.has("restore") && !restore_buffer(d, u32(id))) fprintf(stderr, "pkvmctl free: could not restore every page\n");
  if (int e = d.free_buf(u32(id))) return usage_error("free", std::string(strerror(e)) + " (" + errno_name(e) + ")");
  printf("buffer %llu freed\n", (unsigned long long)id);
  return 0;
}

int cmd_buffer(int argc, char** argv) {
  Args a(argc, argv, 2, {}, {});
  if (a.help() || a.pos().size() != 1) {
    printf("usage: pkvmctl buffer ID\n  Shows each page of test buffer ID with its owner and state.\n");
    return a.help() ? 0 : 1;
  }
  Device d;
  if (!d.open()) return 1;
  u64 id, nr, pfn;
  if (!Args::parse_num(a.pos()[0], &id)) return usage_error("buffer", "not a number");
  if (int e = d.query(u32(id), &nr, &pfn)) return usage_error("buffer", strerror(e));
  std::vector<Run> runs;
  if (!read_dump(d, &runs, nullptr, pfn)) return 1;
  printf("buffer %llu: %llu pages at pfn %#llx\n", (unsigned long long)id, (unsigned long long)nr,
         (unsigned long long)pfn);
  for (u64 p = 0; p < nr; ++p) {
    u32 o, s;
    page_state(runs, pfn + p, &o, &s);
    printf("  page %4llu pfn %#llx: %s %s\n", (unsigned long long)p, (unsigned long long)(pfn + p),
           owner_name(o).c_str(), state_name(s));
  }
  return 0;
}

int cmd_fill(int argc, char** argv) {
  Args a(argc, argv, 2, {"buf", "page", "seed"}, {});
  if (a.help() || !a.has("buf")) {
    printf("usage: pkvmctl fill --buf ID [--page N] [--seed S]\n"
           "  Writes a pattern derived from S (default 1; 0 writes zeros) into page N of\n"
           "  buffer ID through a userspace mapping, and prints its FNV-1a checksum.\n");
    return a.help() ? 0 : 1;
  }
  Device d;
  if (!d.open()) return 1;
  const u32 buf = u32(a.num("buf"));
  const u64 page = a.num("page"), seed = a.num("seed", 1);
  u64 nr;
  if (int e = d.query(buf, &nr, nullptr)) return usage_error("fill", strerror(e));
  if (page >= nr) return usage_error("fill", "page beyond the buffer");
  Mapping m;
  if (!m.map(d, buf, nr)) return usage_error("fill", std::string("mmap: ") + strerror(errno));
  const Touch t = touch_page(m.page_ptr(page), true, seed);
  if (t.refused) {
    printf("fill: the write was refused by the hypervisor (SIGBUS at %#llx)\n", (unsigned long long)t.addr);
    return 2;
  }
  printf("buffer %u page %llu: pattern %#llx written; FNV-1a checksum %#018llx\n", buf, (unsigned long long)page,
         (unsigned long long)seed, (unsigned long long)fnv1a_pattern(seed));
  return 0;
}

// share / unshare / donate / reclaim: the hypervisor, or a guest with --guest.
int cmd_transition(int argc, char** argv, const char* cmd) {
  Args a(argc, argv, 2, kPageOpts, {});
  const std::string c = cmd;
  if (a.help()) {
    if (c == "share")
      printf("usage: pkvmctl share PAGES [--guest G --gfn GFN]\n"
             "  host_share_hyp: the host keeps the pages and the hypervisor may access them.\n"
             "  With --guest: host_share_guest, mapped at GFN in guest G.\n");
    else if (c == "unshare")
      printf("usage: pkvmctl unshare PAGES | pkvmctl unshare --guest G --gfn GFN [--nr N]\n"
             "  host_unshare_hyp (refused with EBUSY while pinned), or host_unshare_guest.\n");
    else if (c == "donate")
      printf("usage: pkvmctl donate PAGES [--guest G --gfn GFN]\n"
             "  host_donate_hyp: the host loses all access (an access is refused: SIGBUS /\n"
             "  kernel oops). With --guest: host_donate_guest, mapped at GFN in guest G.\n");
    else
      printf("usage: pkvmctl reclaim PAGES [--guest G]\n"
             "  hyp_donate_host: the hypervisor gives the pages back, zeroed. With --guest:\n"
             "  host_reclaim_guest, after guest G was destroyed (EBUSY while it lives).\n");
    printf("%s", kPagesHelp);
    return 0;
  }
  if (!a.error().empty()) return usage_error(cmd, a.error());
  const bool guest = a.has("guest");
  Call call;
  call.guest = a.num("guest");
  call.gfn = a.num("gfn");
  if (c == "unshare" && guest) {
    call.fn = PKVM_HC_HOST_UNSHARE_GUEST_FN;
    call.nr = a.num("nr", 1);
  } else {
    if (!page_args(a, cmd, &call)) return 1;
    if (c == "share")
      call.fn = guest ? PKVM_HC_HOST_SHARE_GUEST_FN : PKVM_HC_HOST_SHARE_HYP_FN;
    else if (c == "unshare")
      call.fn = PKVM_HC_HOST_UNSHARE_HYP_FN;
    else if (c == "donate")
      call.fn = guest ? PKVM_HC_HOST_DONATE_GUEST_FN : PKVM_HC_HOST_DONATE_HYP_FN;
    else
      call.fn = guest ? PKVM_HC_HOST_RECLAIM_GUEST_FN : PKVM_HC_HYP_DONATE_HOST_FN;
  }
  Device d;
  if (!d.open()) return 1;
  return run_call(d, a, call);
}

int cmd_pin(int argc, char** argv, bool pin) {
  Args a(argc, argv, 2, kPageOpts, {});
  if (a.help()) {
    printf("usage: pkvmctl %s PAGES [--repeat N]\n  %s\n%s", pin ? "pin" : "unpin",
           pin ? "hyp_pin_shared: while pinned, unsharing fails with EBUSY; pins nest."
               : "hyp_unpin_shared: drops one pin of each page.",
           kPagesHelp);
    return 0;
  }
  if (!a.error().empty()) return usage_error(pin ? "pin" : "unpin", a.error());
  Call call;
  if (!page_args(a, pin ? "pin" : "unpin", &call)) return 1;
  call.fn = pin ? PKVM_HC_HYP_PIN_SHARED_FN : PKVM_HC_HYP_UNPIN_SHARED_FN;
  Device d;
  if (!d.open()) return 1;
  return run_call(d, a, call);
}

int cmd_checksum(int argc, char** argv) {
  Args a(argc, argv, 2, kPageOpts, {});
  if (a.help()) {
    printf("usage: pkvmctl checksum PAGES\n"
           "  The hypervisor's FNV-1a checksum of pages it owns or shares, read through its\n"
           "  own mapping. With --buf, also the host's checksum of the same pages (when the\n"
           "  host can read them) and whether they match.\n%s",
           kPagesHelp);
    return 0;
  }
  if (!a.error().empty()) return usage_error("checksum", a.error());
  Call call;
  if (!page_args(a, "checksum", &call)) return 1;
  call.fn = PKVM_HC_CHECKSUM_FN;
  Device d;
  if (!d.open()) return 1;
  const CallResult r = d.call(call);
  if (r.err) return usage_error("checksum", strerror(r.err));
  if (r.ret) {
    printf("checksum: refused by the hypervisor: %s (%s)\n", ret_name(r.ret).c_str(), ret_meaning(r.ret));
    return a.has("expect") ? (a.str("expect") == ret_name(r.ret) ? 0 : 3) : 2;
  }
  printf("hypervisor checksum of pfn %#llx+%llu: %#018llx\n", (unsigned long long)r.pfn, (unsigned long long)call.nr,
         (unsigned long long)r.res[0]);
  if (call.raw) return 0;
  u64 nr;
  if (d.query(call.buf, &nr, nullptr)) return 0;
  Mapping m;
  if (!m.map(d, call.buf, nr)) return 0;
  u64 h = kFnvInit;
  for (u64 p = call.page; p < call.page + call.nr; ++p) {
    u64 sum = 0;
    const Touch t = touch(m.word(p), false);
    if (t.refused) {
      printf("host view: the host cannot read page %llu (refused: the hypervisor owns it)\n", (unsigned long long)p);
      return 0;
    }
    sum = fnv1a_words(m.word(p), kPage / 8, h);
    h = sum;
  }
  printf("host checksum of the same pages:        %#018llx: %s\n", (unsigned long long)h,
         h == r.res[0] ? "match: the hypervisor sees what the host wrote" : "MISMATCH");
  return h == r.res[0] ? 0 : 4;
}

int cmd_guest(int argc, char** argv) {
  Args a(argc, argv, 2, {"gfn", "nr", "expect"}, {});
  const auto& p = a.pos();
  if (a.help() || p.empty()) {
    printf("usage: pkvmctl guest create\n"
           "       pkvmctl guest destroy G\n"
           "       pkvmctl guest share-host G --gfn GFN [--nr N]     (test builds only)\n"
           "       pkvmctl guest unshare-host G --gfn GFN [--nr N]   (test builds only)\n"
           "  guest_create / guest_destroy, and the guest-side calls the host issues on a\n"
           "  guest's behalf in test builds (guest_share_host / guest_unshare_host).\n");
    return a.help() ? 0 : 1;
  }
  Call call;
  if (p[0] == "create") {
    call.fn = PKVM_HC_GUEST_CREATE_FN;
  } else {
    if (p.size() != 2) return usage_error("guest", "which guest?");
    u64 g;
    if (!Args::parse_num(p[1], &g)) return usage_error("guest", "not a number");
    call.guest = g;
    call.gfn = a.num("gfn");
    call.nr = a.num("nr", 1);
    if (p[0] == "destroy")
      call.fn = PKVM_HC_GUEST_DESTROY_FN;
    else if (p[0] == "share-host")
      call.fn = PKVM_HC_GUEST_SHARE_HOST_FN;
    else if (p[0] == "unshare-host")
      call.fn = PKVM_HC_GUEST_UNSHARE_HOST_FN;
    else
      return usage_error("guest", "unknown subcommand " + p[0]);
  }
  Device d;
  if (!d.open()) return 1;
  if (call.fn == PKVM_HC_GUEST_CREATE_FN) {
    const CallResult r = d.call(call);
    if (r.err) return usage_error("guest", strerror(r.err));
    if (r.ret) {
      printf("guest_create: refused by the hypervisor: %s (%s)\n", ret_name(r.ret).c_str(), ret_meaning(r.ret));
      return 2;
    }
    printf("guest %llu created\n", (unsigned long long)r.res[0]);
    return 0;
  }
  return run_call(d, a, call);
}

int cmd_call(int argc, char** argv) {
  Args a(argc, argv, 2, {"buf", "page", "pfn", "nr", "guest", "gfn", "start", "count", "expect", "repeat", "id", "x1",
                         "x2", "x3", "x4", "x5", "x6"},
         {});
  if (a.help() || (a.pos().size() != 1 && !a.has("id"))) {
    printf("usage: pkvmctl call NAME [--buf ID --page N | --pfn PFN] [--nr N] [--guest G]\n"
           "                  [--gfn GFN] [--start PFN] [--count N] [--repeat N] [--expect X]\n"
           "       pkvmctl call --id FUNCTION_ID [--x1 V ... --x6 V] [--expect X]\n"
           "  Issues one ABI call by name (abi_version, null, host_share_hyp, ...,\n"
           "  inject_alloc_failure: --start is `after`) with arguments passed unchecked, or\n"
           "  an HVC with a function id the ABI does not define (the module refuses known\n"
           "  ids) to see how the hypervisor treats unknown calls.\n");
    return a.help() ? 0 : 1;
  }
  if (!a.error().empty()) return usage_error("call", a.error());
  Device d;
  if (!d.open()) return 1;
  if (a.has("id")) {
    pkvm_ioc_raw_hvc h{};
    h.regs[0] = a.num("id");
    for (int i = 1; i <= 6; ++i) h.regs[i] = a.num("x" + std::to_string(i));
    if (int e = d.ioctl(PKVM_IOC_RAW_HVC, &h)) return usage_error("call", strerror(e));
    const s64 r = s64(h.regs[0]);
    printf("hvc %#llx: x0=%lld (%s) x1=%#llx x2=%#llx x3=%#llx\n", (unsigned long long)a.num("id"), (long long)r,
           r == PKVM_SMCCC_RET_NOT_SUPPORTED ? "NOT_SUPPORTED" : ret_name(r).c_str(), (unsigned long long)h.regs[1],
           (unsigned long long)h.regs[2], (unsigned long long)h.regs[3]);
    if (a.has("expect")) {
      s64 want;
      if (!parse_ret(a.str("expect"), &want)) return usage_error("call", "bad --expect");
      return want == r ? 0 : 3;
    }
    return 0;
  }
  const int fn = call_fn(a.pos()[0]);
  if (fn < 0) return usage_error("call", "unknown call " + a.pos()[0]);
  Call c;
  c.fn = u32(fn);
  if (a.has("pfn") || a.has("buf")) {
    if (!page_args(a, "call", &c)) return 1;
  } else {
    c.nr = a.num("nr");
  }
  c.guest = a.num("guest");
  c.gfn = a.num("gfn");
  c.start_pfn = a.num("start");
  c.count = a.num("count");
  return run_call(d, a, c);
}

int cmd_touch(int argc, char** argv, bool kernel) {
  Args a(argc, argv, 2, {"buf", "page", "write", "expect"}, {"plain"});
  if (a.help() || !a.has("buf")) {
    if (kernel)
      printf("usage: pkvmctl ktouch --buf ID [--page N] [--write VALUE] [--plain] [--expect ok|refused]\n"
             "  Reads (or writes) the first word of page N of buffer ID from a dedicated\n"
             "  kernel thread through the kernel's linear map, with copy_from_kernel_nofault\n"
             "  (a hand-made __put_kernel_nofault for writes) or, with --plain, a plain access.\n"
             "  A refusal by the hypervisor is an external abort: on Linux 6.1 it oopses that\n"
             "  thread (the nofault accessors do not recover it); the system runs on.\n");
    else
      printf("usage: pkvmctl touch --buf ID [--page N] [--write VALUE] [--expect ok|refused]\n"
             "  Reads (or writes) the first word of page N of buffer ID through a userspace\n"
             "  mapping. A refusal by the hypervisor arrives as SIGBUS; pkvmctl catches it\n"
             "  (sigsetjmp) and reports it instead of dying.\n");
    return a.help() ? 0 : 1;
  }
  if (!a.error().empty()) return usage_error(kernel ? "ktouch" : "touch", a.error());
  Device d;
  if (!d.open()) return 1;
  const u32 buf = u32(a.num("buf"));
  const u64 page = a.num("page");
  const bool write = a.has("write");
  const u64 value = a.num("write");
  bool refused = false;
  if (kernel) {
    u64 v = value, esr = 0;
    u32 outcome = 0;
    if (int e = d.ktouch(buf, page * kPage, write, a.has("plain"), &v, &outcome, &esr))
      return usage_error("ktouch", strerror(e));
    switch (outcome) {
      case PKVM_KTOUCH_DONE:
        if (write)
          printf("kernel write of %#llx to buffer %u page %llu: done\n", (unsigned long long)value, buf,
                 (unsigned long long)page);
        else
          printf("kernel read of buffer %u page %llu: 0x%llx\n", buf, (unsigned long long)page, (unsigned long long)v);
        break;
      case PKVM_KTOUCH_FAULTED:
        printf("kernel %s of buffer %u page %llu: refused; the nofault accessor returned -EFAULT\n",
               write ? "write" : "read", buf, (unsigned long long)page);
        refused = true;
        break;
      case PKVM_KTOUCH_OOPSED:
        printf("kernel %s of buffer %u page %llu: refused by the hypervisor: synchronous external abort "
               "(ESR %#llx); the probe thread oopsed, the system runs on\n",
               write ? "write" : "read", buf, (unsigned long long)page, (unsigned long long)esr);
        refused = true;
        break;
      default:
        printf("kernel access probe did not finish\n");
        return 1;
    }
  } else {
    u64 nr;
    if (int e = d.query(buf, &nr, nullptr)) return usage_error("touch", strerror(e));
    if (page >= nr) return usage_error("touch", "page beyond the buffer");
    Mapping m;
    if (!m.map(d, buf, nr)) return usage_error("touch", std::string("mmap: ") + strerror(errno));
    const Touch t = touch(m.word(page), write, value);
    if (t.refused) {
      printf("userspace %s of buffer %u page %llu: refused by the hypervisor: SIGBUS (%s) at %#llx; caught, "
             "the process runs on\n",
             write ? "write" : "read", buf, (unsigned long long)page,
             t.si_code == BUS_OBJERR ? "BUS_OBJERR" : std::to_string(t.si_code).c_str(), (unsigned long long)t.addr);
      refused = true;
    } else if (write) {
      printf("userspace write of %#llx to buffer %u page %llu: done\n", (unsigned long long)value, buf,
             (unsigned long long)page);
    } else {
      printf("userspace read of buffer %u page %llu: 0x%llx\n", buf, (unsigned long long)page,
             (unsigned long long)t.value);
    }
  }
  if (a.has("expect")) {
    const std::string e = a.str("expect");
    if (e != "ok" && e != "refused") return usage_error("touch", "--expect ok or refused");
    return (e == "refused") == refused ? 0 : 3;
  }
  return 0;
}

}  // namespace
}  // namespace pkvmctl

int main(int argc, char** argv) {
  using namespace pkvmctl;
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    printf("%s", kUsage);
    return argc < 2 ? 1 : 0;
  }
  const std::string c = argv[1];
  if (c == "info") return cmd_info(argc, argv);
  if (c == "stats") return cmd_stats(argc, argv);
  if (c == "dump") return cmd_dump(argc, argv);
  if (c == "alloc") return cmd_alloc(argc, argv);
  if (c == "free") return cmd_free(argc, argv);
  if (c == "buffer") return cmd_buffer(argc, argv);
  if (c == "fill") return cmd_fill(argc, argv);
  if (c == "share" || c == "unshare" || c == "donate" || c == "reclaim")
    return cmd_transition(argc, argv, argv[1]);
  if (c == "pin" || c == "unpin") return cmd_pin(argc, argv, c == "pin");
  if (c == "checksum") return cmd_checksum(argc, argv);
  if (c == "guest") return cmd_guest(argc, argv);
  if (c == "call") return cmd_call(argc, argv);
  if (c == "touch" || c == "ktouch") return cmd_touch(argc, argv, c == "ktouch");
  if (c == "selftest") return cmd_selftest(argc, argv);
  if (c == "fuzz") return cmd_fuzz(argc, argv);
  if (c == "stress") return cmd_stress(argc, argv);
  if (c == "bench") return cmd_bench(argc, argv);
  fprintf(stderr, "pkvmctl: unknown command %s\n%s", c.c_str(), kUsage);
  return 1;
}
