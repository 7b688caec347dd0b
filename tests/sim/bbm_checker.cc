// SPDX-License-Identifier: Apache-2.0
// BbmChecker: see bbm_checker.h for the rules.
#include "tests/sim/bbm_checker.h"

#include <cinttypes>
#include <cstdarg>
#include <cstdio>

#include "pgtable/desc.h"

namespace pkvm::sim {
namespace {

using namespace desc;

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

const char* format_name(Format f) { return f == Format::kStage2 ? "stage-2" : "EL2 stage-1"; }

// "slot 0x... (L2 ia=0x... vmid=1, event #12)": where a message is about.
std::string where(const Event& e) {
  return format("slot 0x%" PRIx64 " (L%u ia=0x%" PRIx64 " vmid=%u, event #%" PRIu64 ")", e.ptep_pa, e.level,
                e.ia, e.vmid, e.seq);
}

// "<where>: <old> -> <new>": a descriptor write, for messages. Built only
// when a message is emitted: formatting every write would dominate the
// checker's cost.
std::string describe_write(const Event& e) {
  return where(e) + ": " + describe_pte(e.old_pte, e.level) + " -> " + describe_pte(e.new_pte, e.level);
}

// Bits whose change between two valid leaves needs break-before-make even
// with the same output address: memory type, shareability, contiguous hint.
u64 bbm_attr_mask(Format f) {
  return (f == Format::kStage2 ? kS2MemAttrMask : kS1AttrIdxMask) | kShMask | kContiguous;
}

// True when `nw` grants less than `old` (same output, both valid, same type).
bool restricts(Format f, u64 old, u64 nw, bool table) {
  if (table) {
    const u64 m = kTableApMask | kTableXn | kTablePxn;  // set bits only ever remove access
    return (nw & m & ~old) != 0;
  }
  if (f == Format::kStage2) {
    const u64 removed = (old & (kS2ApR | kS2ApW)) & ~nw;
    return removed != 0 || ((nw & kS2Xn) && !(old & kS2Xn));
  }
  return ((nw & kS1ApRo) && !(old & kS1ApRo)) || ((nw & kS1Xn) && !(old & kS1Xn));
}

const char* need_name(int n) {
  static const char* const names[] = {"break", "permission restriction", "FEAT_BBM level-2 replacement"};
  return names[n];
}

}  // namespace

BbmChecker::BbmChecker(Format default_format) : default_format_(default_format) {}

BbmChecker::BbmChecker(SimPlatform& platform, Format default_format) : default_format_(default_format) {
  attach(platform);
}

BbmChecker::~BbmChecker() { detach(); }

void BbmChecker::attach(SimPlatform& platform) {
  detach();
  platform.add_observer(this);  // calls on_attach; never hold mu_ here (lock order: recorder, checker)
}

void BbmChecker::detach() {
  SimPlatform* p;
  {
    std::lock_guard<std::mutex> l(mu_);
    p = platform_;
  }
  if (p) p->remove_observer(this);
}

void BbmChecker::on_attach(SimPlatform& platform, const std::vector<LiveBlock>& live) {
  std::lock_guard<std::mutex> l(mu_);
  platform_ = &platform;
  for (const LiveBlock& b : live) on_alloc(b.pa.value(), b.order);
}

void BbmChecker::on_detach() {
  std::lock_guard<std::mutex> l(mu_);
  platform_ = nullptr;
}

void BbmChecker::set_format(u32 vmid, Format f) {
  std::lock_guard<std::mutex> l(mu_);
  formats_[vmid] = f;
}

void BbmChecker::set_bbm2(bool on) {
  std::lock_guard<std::mutex> l(mu_);
  bbm2_ = on;
}

void BbmChecker::set_strict_attrs(bool on) {
  std::lock_guard<std::mutex> l(mu_);
  strict_attrs_ = on;
}

void BbmChecker::set_require_dsb(bool on) {
  std::lock_guard<std::mutex> l(mu_);
  require_dsb_ = on;
}

void BbmChecker::set_teardown(bool on) {
  std::lock_guard<std::mutex> l(mu_);
  teardown_ = on;
}

Format BbmChecker::format_of(u32 vmid) const {
  auto it = formats_.find(vmid);
  return it == formats_.end() ? default_format_ : it->second;
}

struct BbmChecker::Checkpoint {
  bool teardown;
  u64 local_seq, last_dsb;
  std::unordered_map<u64, Slot> slots;
  std::unordered_map<u64, PageInfo> pages;
  std::unordered_set<u64> unlinked;
  std::list<Pending> pending;
  std::vector<std::string> violations;
};

std::shared_ptr<const BbmChecker::Checkpoint> BbmChecker::checkpoint() const {
  std::lock_guard<std::mutex> l(mu_);
  return std::make_shared<const Checkpoint>(
      Checkpoint{teardown_, local_seq_, last_dsb_, slots_, pages_, unlinked_, pending_, violations_});
}

void BbmChecker::rollback(const Checkpoint& c) {
  std::lock_guard<std::mutex> l(mu_);
  teardown_ = c.teardown;
  local_seq_ = c.local_seq;
  last_dsb_ = c.last_dsb;
  // Fresh copies, not copy-assignment: the maps would keep their grown
  // bucket arrays and iterate in another order than after a fresh boot.
  slots_ = decltype(slots_)(c.slots);
  pages_ = decltype(pages_)(c.pages);
  unlinked_ = decltype(unlinked_)(c.unlinked);
  pending_ = c.pending;
  violations_ = c.violations;
}

void BbmChecker::add_violation(std::string msg) { violations_.push_back(std::move(msg)); }

void BbmChecker::on_event(const Event& e) {
  std::lock_guard<std::mutex> l(mu_);
  local_seq_++;
  switch (e.type) {
    case EventType::kPteWrite: on_pte_write(e); break;
    case EventType::kTlbi: on_tlbi(e); break;
    case EventType::kBarrier:
      if (e.barrier == Barrier::kDsbIsh || e.barrier == Barrier::kDsbIshst) last_dsb_ = local_seq_;
      break;
    case EventType::kAlloc: on_alloc(e.addr, e.order); break;
    case EventType::kFree: on_free(e); break;
    case EventType::kDcacheCleanInvalPoc:
    case EventType::kIcacheInvalPou: break;
  }
}

void BbmChecker::on_alloc(u64 pa, u32 order) {
  for (u64 i = 0; i < (u64{1} << order); i++) {
    const u64 page = pa + i * kPageSize;
    pages_[page] = PageInfo{};
    unlinked_.erase(page);
    for (u64 s = page; s < page + kPageSize; s += 8) slots_.erase(s);
  }
}

void BbmChecker::on_free(const Event& e) {
  for (u64 i = 0; i < (u64{1} << e.order); i++) {
    const u64 page = e.addr + i * kPageSize;
    auto it = pages_.find(page);
    if (it == pages_.end()) continue;  // never seen allocated (replay of a partial log)
    PageInfo& pi = it->second;
    if (!teardown_) {
      // Rule d.
      if (!pi.linked_from.empty() && !unreachable(page, 0))
        add_violation(format("[d] table page 0x%" PRIx64 " freed (event #%" PRIu64
                             ") while slot 0x%" PRIx64 " still holds a table descriptor pointing to it",
                             page, e.seq, *pi.linked_from.begin()));
      if (pi.needs_tlbi)
        add_violation(format("[d] table page 0x%" PRIx64 " freed (event #%" PRIu64
                             ") without a table-level invalidation (%s) after it was unlinked: %s",
                             page, e.seq, pi.format == Format::kStage2 ? "kVmid" : "kEl2All",
                             ("unlinked at " + where(pi.unlink_event)).c_str()));
    }
    // The page's slots go away; tables they linked lose that parent.
    for (u64 s = page; s < page + kPageSize; s += 8) {
      auto si = slots_.find(s);
      if (si == slots_.end()) continue;
      if (is_table(si->second.cur, si->second.level)) {
        auto child = pages_.find(oa(si->second.cur));
        if (child != pages_.end()) child->second.linked_from.erase(s);
      }
      slots_.erase(si);
    }
    pages_.erase(it);
    unlinked_.erase(page);
  }
}

void BbmChecker::link(u64 table_pa, u64 slot, const Event& e) {
  auto it = pages_.find(table_pa);
  if (it == pages_.end()) {
    add_violation(format("[e] %s: table descriptor points to page 0x%" PRIx64
                         " which is not an allocated table page",
                         where(e).c_str(), table_pa));
    return;
  }
  PageInfo& pi = it->second;
  if (!pi.linked_from.empty() && !pi.linked_from.count(slot))
    add_violation(format("[d] %s: table page 0x%" PRIx64 " is already linked from slot 0x%" PRIx64,
                         where(e).c_str(), table_pa, *pi.linked_from.begin()));
  pi.linked_from.insert(slot);
}

bool BbmChecker::unreachable(u64 page, int depth) const {
  auto it = pages_.find(page);
  if (it == pages_.end()) return true;
  const PageInfo& pi = it->second;
  if (pi.linked_from.empty()) return pi.unlinked && !pi.needs_tlbi;
  if (depth > 4) return false;  // deeper than any table: a cycle, so reachable
  for (u64 slot : pi.linked_from)
    if (!unreachable(slot & ~(kPageSize - 1), depth + 1)) return false;
  return true;
}

void BbmChecker::unlink(u64 table_pa, u64 slot, const Event& e, Format f) {
  auto it = pages_.find(table_pa);
  if (it == pages_.end()) return;  // freed in teardown before its parent
  PageInfo& pi = it->second;
  pi.linked_from.erase(slot);
  if (teardown_) return;
  pi.unlinked = true;
  pi.needs_tlbi = true;
  pi.vmid = e.vmid;
  pi.format = f;
  pi.unlink_seq = local_seq_;
  pi.unlink_event = e;
  unlinked_.insert(table_pa);
}

void BbmChecker::on_pte_write(const Event& e) {
  const u64 slot_pa = e.ptep_pa;
  const u64 page = slot_pa & ~(kPageSize - 1);
  // Rule e: the slot must live in an allocated page.
  if (!pages_.count(page)) {
    add_violation(format("[e] %s: descriptor written into page 0x%" PRIx64
                         " which is not an allocated table page (use after free?): %s -> %s",
                         where(e).c_str(), page, describe_pte(e.old_pte, e.level).c_str(),
                         describe_pte(e.new_pte, e.level).c_str()));
    return;
  }
  const Format f = format_of(e.vmid);
  const u32 lvl = e.level;
  if (lvl > kLastLevel) {
    add_violation(format("%s: level %u out of range", where(e).c_str(), lvl));
    return;
  }
  // The event's old value is what the library's store or CAS replaced; it is
  // authoritative even if concurrent writers' events arrive out of order.
  const u64 old = e.old_pte, nw = e.new_pte;
  const u64 size = granule_size(lvl);
  const u64 ia0 = e.ia & ~(size - 1);
  Slot& s = slots_[slot_pa];
  const bool ov = is_valid(old), nv = is_valid(nw);
  auto transition = [&] { return describe_pte(old, lvl) + " -> " + describe_pte(nw, lvl); };
  auto add_pending = [&](Need need) {
    if (teardown_) return;
    pending_.push_back(Pending{need, slot_pa, ia0, size, e.vmid, f, local_seq_, e});
    if (need == Need::kBreak) s.break_pending = true;
  };

  // Rule b: no make while the break is not invalidated.
  if (nv && s.break_pending) {
    std::string broke;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->need == Need::kBreak && it->slot == slot_pa) {
        broke = describe_write(it->write);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    add_violation(format("[b] %s: made valid (%s) before a covering TLB invalidation of the break (%s)",
                         where(e).c_str(), describe_pte(nw, lvl).c_str(), broke.c_str()));
    s.break_pending = false;
  }

  if (ov && nv && old != nw) {
    const bool ot = is_table(old, lvl), nt = is_table(nw, lvl);
    if (s.known_level && s.level != lvl) {
      add_violation(format("[a] %s: entry level changed from %u to %u without break-before-make",
                           where(e).c_str(), s.level, lvl));
    } else if (ot == nt) {
      if (oa(old) != oa(nw)) {
        add_violation(format("[a] %s: output address changed without break-before-make: %s",
                             where(e).c_str(), transition().c_str()));
      } else {
        if (!ot && strict_attrs_ && ((old ^ nw) & bbm_attr_mask(f)))
          add_violation(format("[a] %s: memory type/shareability/contiguous changed without "
                               "break-before-make: %s",
                               where(e).c_str(), transition().c_str()));
        if (restricts(f, old, nw, ot)) add_pending(Need::kRestrict);  // rule c
      }
    } else if (!bbm2_) {
      add_violation(format("[a] %s: %s replaced by a %s without break-before-make: %s", where(e).c_str(),
                           ot ? "table" : "block", nt ? "table" : "block", transition().c_str()));
    } else if (nt) {
      // bbm2: block -> table must be the block's exact split.
      std::string why;
      if (!check_split(old, lvl, oa(nw), &why, 0))
        add_violation(format("[a] %s: FEAT_BBM block -> table, but the table is not the block's split: %s",
                             where(e).c_str(), why.c_str()));
      add_pending(Need::kBbm2);
    } else {
      // bbm2: table -> block must be a block of this level, aligned.
      if (!level_supports_block(lvl) || (oa(nw) & (size - 1)))
        add_violation(format("[a] %s: FEAT_BBM table -> block with a block not aligned to 0x%" PRIx64 ": %s",
                             where(e).c_str(), size, transition().c_str()));
      add_pending(Need::kBbm2);
    }
  } else if (ov && !nv) {
    add_pending(Need::kBreak);  // rule b starts here
  }

  // Rule d bookkeeping: which slot points at which table page.
  const bool old_link = is_table(old, lvl), new_link = is_table(nw, lvl);
  if (old_link && !(new_link && oa(nw) == oa(old))) unlink(oa(old), slot_pa, e, f);
  if (new_link && !(old_link && oa(nw) == oa(old))) link(oa(nw), slot_pa, e);

  s.cur = nw;
  s.level = lvl;
  s.known_level = true;
}

bool BbmChecker::check_split(u64 block, u32 level, u64 table_pa, std::string* why, int depth) const {
  // Without a platform (replay), the contents are unknown: accept.
  if (!platform_ || !platform_->contains(PhysAddr(table_pa)) || level >= kLastLevel) return true;
  const u64* t = static_cast<const u64*>(platform_->phys_to_virt(PhysAddr(table_pa)));
  const u32 cl = level + 1;
  const u64 sz = granule_size(cl);
  for (u32 i = 0; i < kPtrsPerTable; i++) {
    const u64 pte = t[i];
    const u64 want = oa(block) + i * sz;
    if (!is_valid(pte)) {
      *why = format("entry %u of table 0x%" PRIx64 " (L%u) is %s", i, table_pa, cl, describe_pte(pte, cl).c_str());
      return false;
    }
    if (is_table(pte, cl)) {
      if (depth >= 2 || !check_split(make_leaf(want, leaf_attrs(block), cl), cl, oa(pte), why, depth + 1))
        return false;
      continue;
    }
    if (oa(pte) != want) {
      *why = format("entry %u of table 0x%" PRIx64 " (L%u) maps 0x%" PRIx64 ", expected 0x%" PRIx64, i, table_pa,
                    cl, oa(pte), want);
      return false;
    }
    if ((leaf_attrs(pte) & ~kContiguous) != (leaf_attrs(block) & ~kContiguous)) {
      *why = format("entry %u of table 0x%" PRIx64 " (L%u) has attributes 0x%" PRIx64 ", the block 0x%" PRIx64,
                    i, table_pa, cl, leaf_attrs(pte), leaf_attrs(block));
      return false;
    }
  }
  return true;
}

bool BbmChecker::covers(const Pending& p, const Event& t) const {
  const bool in_range = t.addr >= p.ia && t.addr - p.ia < p.size;
  if (p.format == Format::kStage2) {
    if (t.tlbi == TlbiKind::kVmid) return t.vmid == p.vmid;
    if (t.tlbi == TlbiKind::kIpa) return t.vmid == p.vmid && in_range;
    return false;  // kIpaLocal is not broadcast; EL2 kinds do not touch stage 2
  }
  if (t.tlbi == TlbiKind::kEl2All) return true;
  if (t.tlbi == TlbiKind::kEl2Va) return in_range;
  return false;
}

void BbmChecker::on_tlbi(const Event& e) {
  auto check_dsb = [&](u64 write_seq, const Event& write, bool unlink) {
    if (require_dsb_ && last_dsb_ <= write_seq)
      add_violation(format("[dsb] TLBI %s (event #%" PRIu64
                           ") is not ordered after the write it covers (no DSB ISHST/ISH in between): %s",
                           to_string(e.tlbi), e.seq,
                           (unlink ? "unlinked at " + where(write) : describe_write(write)).c_str()));
  };
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (!covers(*it, e)) {
      ++it;
      continue;
    }
    check_dsb(it->local_seq, it->write, false);
    if (it->need == Need::kBreak) {
      auto s = slots_.find(it->slot);
      if (s != slots_.end()) s->second.break_pending = false;
    }
    it = pending_.erase(it);
  }
  // Rule d: table-level invalidations release unlinked table pages.
  for (auto it = unlinked_.begin(); it != unlinked_.end();) {
    PageInfo& pi = pages_.at(*it);
    const bool table_level = pi.format == Format::kStage2
                                 ? (e.tlbi == TlbiKind::kVmid && e.vmid == pi.vmid)
                                 : e.tlbi == TlbiKind::kEl2All;
    if (!table_level) {
      ++it;
      continue;
    }
    check_dsb(pi.unlink_seq, pi.unlink_event, true);
    pi.needs_tlbi = false;
    it = unlinked_.erase(it);
  }
}

size_t BbmChecker::finish() {
  {
    std::lock_guard<std::mutex> l(mu_);
    finish_locked();
  }
  return violations().size();
}

void BbmChecker::finish_locked() {
  for (const Pending& p : pending_) {
    const char* inval = p.format == Format::kStage2 ? "kIpa/kVmid" : "kEl2Va/kEl2All";
    add_violation(format("[%s] pending %s never covered by a broadcast TLB invalidation (%s) of %s [0x%" PRIx64
                         ", 0x%" PRIx64 "): %s",
                         p.need == Need::kRestrict ? "c" : p.need == Need::kBreak ? "b" : "a",
                         need_name(int(p.need)), inval, format_name(p.format), p.ia, p.ia + p.size,
                         describe_write(p.write).c_str()));
    auto s = slots_.find(p.slot);
    if (s != slots_.end()) s->second.break_pending = false;
  }
  pending_.clear();
}

std::vector<std::string> BbmChecker::violations() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::string> out = violations_;
  if (platform_)
    for (const std::string& v : platform_->violations()) out.push_back("allocator: " + v);
  return out;
}

std::string BbmChecker::report() const {
  const std::vector<std::string> v = violations();
  if (v.empty()) return "no violations";
  std::string out = format("%zu violation(s):\n", v.size());
  for (const std::string& s : v) out += "  " + s + "\n";
  return out;
}

size_t BbmChecker::pending() const {
  std::lock_guard<std::mutex> l(mu_);
  return pending_.size();
}

void BbmChecker::clear_violations() {
  std::lock_guard<std::mutex> l(mu_);
  violations_.clear();
}

}  // namespace pkvm::sim
