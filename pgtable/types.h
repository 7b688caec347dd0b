// SPDX-License-Identifier: Apache-2.0
// Basic freestanding types shared by pgtable and mem_protect: fixed-width
// integers, strong address types and the errno values the library returns.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace pkvm {

using u8 = uint8_t;
using u16 = uint16_t;
using u32 = uint32_t;
using u64 = uint64_t;
using s32 = int32_t;
using s64 = int64_t;

// Linux errno values: the same numbers travel through the hypercall ABI, so
// they are spelled out here rather than taken from a libc.
inline constexpr int kEPERM = 1;
inline constexpr int kENOENT = 2;
inline constexpr int kE2BIG = 7;
inline constexpr int kEAGAIN = 11;
inline constexpr int kENOMEM = 12;
inline constexpr int kEFAULT = 14;
inline constexpr int kEBUSY = 16;
inline constexpr int kEEXIST = 17;
inline constexpr int kEINVAL = 22;
inline constexpr int kERANGE = 34;
inline constexpr int kEOPNOTSUPP = 95;

/// A tagged 64-bit address. Distinct tags make a physical address, an IPA and
/// a virtual address different types, so passing one where another is
/// expected fails to compile. Arithmetic keeps the tag.
template <typename Tag>
class Addr {
 public:
  constexpr Addr() = default;
  /// Wraps a raw address value.
  constexpr explicit Addr(u64 v) : v_(v) {}
  /// Returns the raw address value.
  constexpr u64 value() const { return v_; }
  /// Address plus a byte offset.
  constexpr Addr operator+(u64 off) const { return Addr(v_ + off); }
  /// Address minus a byte offset.
  constexpr Addr operator-(u64 off) const { return Addr(v_ - off); }
  /// Byte distance between two addresses of the same kind.
  constexpr u64 operator-(Addr o) const { return v_ - o.v_; }
  constexpr bool operator==(Addr o) const { return v_ == o.v_; }
  constexpr bool operator!=(Addr o) const { return v_ != o.v_; }
  constexpr bool operator<(Addr o) const { return v_ < o.v_; }
  constexpr bool operator<=(Addr o) const { return v_ <= o.v_; }
  constexpr bool operator>(Addr o) const { return v_ > o.v_; }
  constexpr bool operator>=(Addr o) const { return v_ >= o.v_; }
  /// Rounds down to a power-of-two alignment.
  constexpr Addr align_down(u64 a) const { return Addr(v_ & ~(a - 1)); }
  /// True when aligned to the power-of-two alignment `a`.
  constexpr bool is_aligned(u64 a) const { return (v_ & (a - 1)) == 0; }

 private:
  u64 v_ = 0;
};

struct PhysTag;
struct IpaTag;
struct VaTag;
/// A physical (output) address.
using PhysAddr = Addr<PhysTag>;
/// An intermediate physical address: the input of a stage-2 translation.
using Ipa = Addr<IpaTag>;
/// A virtual address: the input of a stage-1 translation.
using Va = Addr<VaTag>;

static_assert(sizeof(PhysAddr) == 8 && sizeof(Ipa) == 8 && sizeof(Va) == 8);
static_assert((PhysAddr(0x1234) + 0x10).value() == 0x1244);
static_assert(PhysAddr(0x2fff).align_down(0x1000) == PhysAddr(0x2000));

}  // namespace pkvm
