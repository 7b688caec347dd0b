// SPDX-License-Identifier: Apache-2.0
// pkvmctl: a model of what the hypervisor must answer for transitions on the
// pages of one test buffer, and a random generator of valid and hostile
// operations on them. Used by `fuzz` (one model) and `stress` (one model per
// thread, each on its own buffer and guest).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "pkvmctl.h"

namespace pkvmctl {

/// splitmix64: small, fast and reproducible from a seed.
class Rng {
 public:
  explicit Rng(u64 seed) : s_(seed) {}
  u64 next() {
    u64 z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  u64 below(u64 n) { return n ? next() % n : 0; }
  bool chance(u32 percent) { return below(100) < percent; }

 private:
  u64 s_;
};

enum class OpKind {
  kShareHyp,
  kUnshareHyp,
  kDonateHyp,
  kReclaimHyp,  // hyp_donate_host
  kPin,
  kUnpin,
  kShareGuest,
  kUnshareGuest,
  kDonateGuest,
  kGuestShareHost,
  kGuestUnshareHost,
  kReclaimGuest,
  kGuestCreate,
  kGuestDestroy,
  kChecksum,
  kGetStats,
  kTouchRead,
  kTouchWrite,
  kCount,
};

/// Where an operation's pfn points.
enum class PfnKind { kBuffer, kMmio, kBeyondRam, kBeyondIpa, kHuge, kHyp, kKernel };

struct Op {
  OpKind kind = OpKind::kShareHyp;
  PfnKind where = PfnKind::kBuffer;
  u64 page = 0;  ///< buffer page index (kBuffer)
  u64 nr = 1;
  u64 guest = 0;
  u64 gfn = 0;
  u64 seed = 0;  ///< content written by kTouchWrite
  std::string str() const;
};

/// What the model expects from an operation.
struct Expect {
  int ioctl_err = 0;  ///< the module refuses the request (EACCES, ...)
  s64 ret = 0;        ///< the hypervisor's x0
  bool any_guest_id = false;  ///< guest_create: any free id is right (concurrent mode)
  bool check_sum = false;     ///< checksum: compare the sum
  u64 sum = 0;
  bool touch_refused = false;
  bool check_value = false;  ///< touch read: compare the first word
  u64 value = 0;
};

class Model {
 public:
  /// `concurrent`: other threads use guests too, so guest ids are not
  /// predictable and hostile guest ids must never name a real guest.
  /// The buffer has nr_pages pages; random operations start in the first
  /// `active` of them (ranges may run further).
  Model(u64 nr_pages, u64 active, const Platform& plat, bool test_calls, bool concurrent);

  /// A random operation (valid most of the time, hostile otherwise).
  Op random_op(Rng& rng) const;
  /// The expected outcome of op from the current state.
  Expect expect(const Op& op) const;
  /// Applies a successful op (got: x1 of the call, e.g. the new guest id).
  void apply(const Op& op, u64 got);

  /// The (owner, state) the dump must show for buffer page p.
  void page_view(u64 p, u32* owner, u32* state) const;
  /// pfn of op (the buffer page or the hostile pfn).
  u64 pfn_of(const Op& op, u64 buf_pfn) const;
  /// True when the host may access page p.
  bool host_access(u64 p) const;
  u64 nr_pages() const { return pages_.size(); }
  /// Guests this model created that still hold a slot (alive or dying).
  std::vector<u32> guests() const;

 private:
  enum GState : u8 { kGOwned, kGSharedOwned, kGBorrowed };
  struct Page {
    u32 owner = PKVM_OWNER_HOST;
    bool shared_hyp = false;
    bool shared_guest = false;
    bool guest_shared_host = false;
    u32 pins = 0;
    u64 seed = 0;  ///< content: pattern(seed), 0 = zero
    bool known = true;  ///< false after the hypervisor wrote into it (get_stats)
  };
  struct Guest {
    bool used = false;
    bool alive = false;
    u64 owned = 0;
    std::map<u64, std::pair<u64, GState>> map;  ///< gfn -> (page, state)
  };
  static constexpr u32 kSlots = 8;
  static constexpr u64 kGfnLimit = u64{1} << 28;  // the guest IPA space (40 bits)

  Guest* guest(u64 id);
  const Guest* guest(u64 id) const;
  s64 range_error(const Op& op) const;  // EINVAL for pfns that are not one RAM region
  bool gfn_bad(u64 gfn, u64 nr) const { return gfn + nr < gfn || gfn + nr > kGfnLimit; }
  u64 random_guest(Rng& rng) const;
  u64 random_gfn(Rng& rng, u64 guest, bool mapped) const;

  std::vector<Page> pages_;
  u64 active_;
  Guest guests_[kSlots];
  Platform plat_;
  bool test_calls_;
  bool concurrent_;
};

/// The model's verdict on one issued op: empty when it matched.
std::string compare(const Expect& e, const CallResult& r, const Op& op);

/// What happened when an op ran.
struct Outcome {
  bool hypercall = false;  ///< a hypercall was issued (fn, ret valid)
  u32 fn = 0;
  s64 ret = 0;
  bool ok = false;  ///< the op succeeded: the model must apply it
  u64 got = 0;      ///< x1 (e.g. the new guest id)
  std::string what;  ///< the outcome in words
  std::string diff;  ///< non-empty: it diverged from the model
};

/// Runs op on buffer `buf` (first pfn buf_pfn, mapped at m): a hypercall
/// through the device, or a userspace access. Compares with the model.
Outcome run_op(const Device& d, const Mapping& m, u32 buf, u64 buf_pfn, const Model& model, const Op& op);

}  // namespace pkvmctl
