// SPDX-License-Identifier: Apache-2.0
// Flattened device tree reader: header and block layout checks, an iterative
// bounds-checked walk of the struct block, and the BootInfo extraction built
// on it. See fdt.h for the contract.
#include "nvhe/fdt.h"

namespace pkvm::fdt {
namespace {

constexpr u32 kMagic = 0xd00dfeed;
constexpr u32 kHeaderV16 = 36;  // v16 headers lack size_dt_struct.
constexpr u32 kHeaderV17 = 40;
constexpr u32 kRsvEntry = 16;
constexpr u64 kMaxPropName = 255;

constexpr u32 kTokBeginNode = 1;
constexpr u32 kTokEndNode = 2;
constexpr u32 kTokProp = 3;
constexpr u32 kTokNop = 4;
constexpr u32 kTokEnd = 9;

// Error reporting. Messages with an offset are formatted into one static
// buffer: parsing runs once, on the boot CPU, and the caller prints the
// message before anything else can fail.
char g_msg[160];

int fail(const char** err, const char* msg) {
  if (err) *err = msg;
  return -kEINVAL;
}

int too_big(const char** err, const char* msg) {
  if (err) *err = msg;
  return -kE2BIG;
}

int fail_at(const char** err, const char* msg, u64 off) {
  if (!err) return -kEINVAL;
  constexpr u32 kCap = sizeof(g_msg) - 1;
  u32 n = 0;
  for (const char* s = msg; *s && n < kCap; ++s) g_msg[n++] = *s;
  for (const char* s = " at offset 0x"; *s && n < kCap; ++s) g_msg[n++] = *s;
  char hex[16];
  u32 nd = 0;
  do {
    hex[nd++] = "0123456789abcdef"[off & 0xf];
    off >>= 4;
  } while (off && nd < sizeof(hex));
  while (nd && n < kCap) g_msg[n++] = hex[--nd];
  g_msg[n] = '\0';
  *err = g_msg;
  return -kEINVAL;
}

constexpr u64 align_up4(u64 v) { return (v + 3) & ~u64{3}; }

u32 cstr_len(const char* s) {
  u32 n = 0;
  while (s[n]) ++n;
  return n;
}

// Bounds-checked big-endian reads over [p, p + size). Byte loads only: the
// blob may be unaligned, and with -mstrict-align and the MMU off (Device
// memory) wider unaligned loads would fault.
class View {
 public:
  View(const void* p, u64 size) : p_(static_cast<const u8*>(p)), size_(size) {}

  u64 size() const { return size_; }
  const u8* ptr(u64 off) const { return p_ + off; }

  /// True when [off, off + len) lies inside the view.
  bool in(u64 off, u64 len) const { return off <= size_ && len <= size_ - off; }

  /// Byte at `off`, which the caller has bounds-checked with in().
  u8 byte(u64 off) const { return p_[off]; }

  bool be32(u64 off, u32* v) const {
    if (!in(off, 4)) return false;
    *v = u32{p_[off]} << 24 | u32{p_[off + 1]} << 16 | u32{p_[off + 2]} << 8 | u32{p_[off + 3]};
    return true;
  }

  bool be64(u64 off, u64* v) const {
    u32 hi, lo;
    if (!be32(off, &hi) || !be32(off + 4, &lo)) return false;
    *v = u64{hi} << 32 | lo;
    return true;
  }

  /// `n` (0..2) big-endian cells at `off` as one number.
  bool cells(u64 off, u32 n, u64* v) const {
    if (n == 0) {
      *v = 0;
      return true;
    }
    if (n == 1) {
      u32 c;
      if (!be32(off, &c)) return false;
      *v = c;
      return true;
    }
    return n == 2 && be64(off, v);
  }

  /// Length of the string at `off` when a NUL occurs in [off, end).
  bool str_len(u64 off, u64 end, u32* len) const {
    if (end > size_) end = size_;
    for (u64 i = off; i < end; ++i) {
      if (p_[i] == 0) {
        *len = static_cast<u32>(i - off);
        return true;
      }
    }
    return false;
  }

  /// True when the `len` bytes at `off` equal `s[0..len)`.
  bool eq(u64 off, u32 len, const char* s, u32 slen) const {
    if (len != slen || !in(off, len)) return false;
    for (u32 i = 0; i < len; ++i)
      if (p_[off + i] != static_cast<u8>(s[i])) return false;
    return true;
  }

 private:
  const u8* p_;
  u64 size_;
};

bool overlap(u64 a_off, u64 a_size, u64 b_off, u64 b_size) {
  return a_size && b_size && a_off < b_off + b_size && b_off < a_off + a_size;
}

// The validated block layout of a blob. All offsets are from its start and
// every block lies inside [header, totalsize) without overlapping another.
struct Layout {
  u64 total;
  u32 version;
  u32 boot_cpuid;
  u64 rsv_off, rsv_size;  // rsv_size includes the terminating entry
  u64 struct_off, struct_size;
  u64 strings_off, strings_size;
};

int check_header(const void* blob, u64 max_size, Layout* l, const char** err) {
  if (!blob) return fail(err, "fdt: null blob");
  View v(blob, max_size);
  u32 magic, total, off_struct, off_strings, off_rsv, version, last_comp;
  if (!v.be32(0, &magic)) return fail(err, "fdt: blob smaller than the header");
  if (magic != kMagic) return fail(err, "fdt: bad magic (expected 0xd00dfeed)");
  if (!v.be32(4, &total) || !v.be32(8, &off_struct) || !v.be32(12, &off_strings) ||
      !v.be32(16, &off_rsv) || !v.be32(20, &version) || !v.be32(24, &last_comp) ||
      !v.be32(28, &l->boot_cpuid))
    return fail(err, "fdt: blob smaller than the header");
  if (version < 16) return fail(err, "fdt: unsupported version (need >= 16)");
  if (last_comp > 17) return fail(err, "fdt: unsupported last_comp_version (need <= 17)");
  const u32 hdr = version >= 17 ? kHeaderV17 : kHeaderV16;
  u32 size_strings, size_struct = 0;
  if (!v.be32(32, &size_strings) || (version >= 17 && !v.be32(36, &size_struct)))
    return fail(err, "fdt: blob smaller than the header");
  if (total < hdr) return fail(err, "fdt: totalsize smaller than the header");
  if (total > max_size) return fail(err, "fdt: totalsize beyond the buffer size");

  if (off_struct < hdr || off_struct > total) return fail(err, "fdt: struct block offset out of range");
  if (off_struct & 3) return fail(err, "fdt: struct block not 4-byte aligned");
  if (version < 17) {
    // Without size_dt_struct the block ends where the next block starts.
    u64 end = total;
    if (off_strings > off_struct && off_strings < end) end = off_strings;
    if (off_rsv > off_struct && off_rsv < end) end = off_rsv;
    size_struct = static_cast<u32>(end - off_struct);
  }
  if (u64{off_struct} + size_struct > total) return fail(err, "fdt: struct block extends beyond totalsize");
  if (off_strings < hdr || off_strings > total) return fail(err, "fdt: strings block offset out of range");
  if (u64{off_strings} + size_strings > total)
    return fail(err, "fdt: strings block extends beyond totalsize");
  if (overlap(off_struct, size_struct, off_strings, size_strings))
    return fail(err, "fdt: struct and strings blocks overlap");

  if (off_rsv < hdr || off_rsv > total) return fail(err, "fdt: memreserve block offset out of range");
  if (off_rsv & 7) return fail(err, "fdt: memreserve block not 8-byte aligned");
  // The reservation block has no size field: it ends at its all-zero entry,
  // which must come before the next block (or totalsize).
  u64 limit = total;
  if (size_struct && off_struct >= off_rsv && off_struct < limit) limit = off_struct;
  if (size_strings && off_strings >= off_rsv && off_strings < limit) limit = off_strings;
  u64 off = off_rsv;
  for (;;) {
    if (off + kRsvEntry > limit) return fail_at(err, "fdt: memreserve block not terminated", off_rsv);
    u64 a, s;
    if (!v.be64(off, &a) || !v.be64(off + 8, &s)) return fail_at(err, "fdt: memreserve block not terminated", off_rsv);
    off += kRsvEntry;
    if (a == 0 && s == 0) break;
  }
  const u64 rsv_size = off - off_rsv;
  // A block that starts before the reservation block must also end before it.
  if (overlap(off_rsv, rsv_size, off_struct, size_struct))
    return fail(err, "fdt: memreserve block overlaps the struct block");
  if (overlap(off_rsv, rsv_size, off_strings, size_strings))
    return fail(err, "fdt: memreserve block overlaps the strings block");

  l->total = total;
  l->version = version;
  l->rsv_off = off_rsv;
  l->rsv_size = rsv_size;
  l->struct_off = off_struct;
  l->struct_size = size_struct;
  l->strings_off = off_strings;
  l->strings_size = size_strings;
  return 0;
}

// A property value (or absence) by offset into the blob.
struct Ref {
  u32 off = 0;
  u32 len = 0;
  bool present = false;
};

// Roles the extraction cares about, fixed when a node is entered.
enum Kind : u8 { kOther, kRoot, kChosen, kAliases, kCpus, kReservedMem, kPsciName };

// One open node on the walk's stack. Ancestors keep what their descendants
// need: name, cells for the children's reg and ranges for translation.
struct Level {
  u32 node_off;  // offset of the BEGIN_NODE token
  u32 name_off, name_len;
  u32 ac, sc;  // this node's #address-cells / #size-cells (defaults 2 / 1)
  Ref ranges;
  Kind kind;
  bool has_child;
};

// Properties of the innermost open node. Properties precede subnodes, so
// they are complete when the first subnode starts or the node ends; the
// visitor sees them then ("finalize") and they can be dropped.
struct NodeProps {
  Ref reg, device_type, compatible, status, method;
  bool no_map;
};

// Iterative walk of the struct block with full validation. A visitor gets
//   begin(w, d)        node at stack index d (root = 0) entered
//   prop(w, d, name, name_len, val)  any property of node d: name is the
//                      offset of its name, val its value
//   node(w, d)         node d finalized: w.cur holds its properties
//   end(w, d)          node d closed
// each returning 0 to go on, > 0 to stop the walk with that value, < 0 on
// error. The walk returns 0 after FDT_END, the visitor's stop value, or an
// error. Every step advances by at least 4 bytes inside the struct block and
// the stack is bounded by kMaxDepth, so the walk always terminates.
class Walker {
 public:
  Walker(const View& v, const Layout& l, const char** err) : v(v), l(l), err(err) {}

  template <typename Visitor>
  int run(Visitor& vis) {
    const u64 end = l.struct_off + l.struct_size;
    u64 pos = l.struct_off;
    bool root_done = false;
    bool pending = false;
    depth = 0;
    for (;;) {
      if (pos >= end) return fail_at(err, "fdt: struct block ends without FDT_END", end);
      u32 tok;
      if (end - pos < 4 || !v.be32(pos, &tok)) return fail_at(err, "fdt: truncated token in struct block", pos);
      switch (tok) {
        case kTokBeginNode: {
          if (root_done) return fail_at(err, "fdt: node after the root node", pos);
          u32 nlen;
          if (!v.str_len(pos + 4, end, &nlen))
            return fail_at(err, "fdt: node name not terminated within struct block", pos);
          if (depth == kMaxDepth) return fail_at(err, "fdt: nodes nested deeper than 16", pos);
          if (depth > 0) {
            if (pending) {
              pending = false;
              if (int r = vis.node(*this, depth - 1)) return r;
            }
            lvl[depth - 1].has_child = true;
          }
          Level& n = lvl[depth];
          n.node_off = static_cast<u32>(pos);
          n.name_off = static_cast<u32>(pos + 4);
          n.name_len = nlen;
          n.ac = 2;
          n.sc = 1;
          n.ranges = Ref{};
          n.kind = depth == 0 ? kRoot : depth == 1 ? root_child_kind(n) : kOther;
          n.has_child = false;
          cur = NodeProps{};
          pending = true;
          if (int r = vis.begin(*this, depth)) return r;
          ++depth;
          pos = align_up4(pos + 4 + nlen + 1);
          break;
        }
        case kTokEndNode: {
          if (depth == 0) return fail_at(err, "fdt: END_NODE without an open node", pos);
          if (pending) {
            pending = false;
            if (int r = vis.node(*this, depth - 1)) return r;
          }
          if (int r = vis.end(*this, depth - 1)) return r;
          if (--depth == 0) root_done = true;
          pos += 4;
          break;
        }
        case kTokProp: {
          if (depth == 0) return fail_at(err, "fdt: property outside any node", pos);
          if (lvl[depth - 1].has_child) return fail_at(err, "fdt: property after a subnode", pos);
          u32 len, nameoff;
          if (end - pos < 12 || !v.be32(pos + 4, &len) || !v.be32(pos + 8, &nameoff))
            return fail_at(err, "fdt: truncated property header", pos);
          const u64 val = pos + 12;
          if (len > end - val) return fail_at(err, "fdt: property length beyond struct block", pos);
          if (nameoff >= l.strings_size)
            return fail_at(err, "fdt: property name offset beyond strings block", pos);
          const u64 name = l.strings_off + nameoff, strings_end = l.strings_off + l.strings_size;
          // Names are short (the spec says at most 31 characters); capping the
          // scan keeps many properties sharing one huge string linear.
          const u64 scan_end = strings_end - name > kMaxPropName + 1 ? name + kMaxPropName + 1 : strings_end;
          u32 name_len;
          if (!v.str_len(name, scan_end, &name_len))
            return fail_at(err,
                           scan_end == strings_end ? "fdt: property name not terminated within strings block"
                                                   : "fdt: property name longer than 255 characters",
                           pos);
          const Ref ref{static_cast<u32>(val), len, true};
          if (int r = record(depth - 1, static_cast<u32>(name), name_len, ref, pos)) return r;
          if (int r = vis.prop(*this, depth - 1, static_cast<u32>(name), name_len, ref)) return r;
          pos = align_up4(val + len);
          break;
        }
        case kTokNop:
          pos += 4;
          break;
        case kTokEnd:
          if (depth != 0) return fail_at(err, "fdt: FDT_END inside a node", pos);
          if (!root_done) return fail_at(err, "fdt: FDT_END before any node", pos);
          return 0;
        default:
          return fail_at(err, "fdt: unknown token in struct block", pos);
      }
    }
  }

  /// True when the string property `r` is exactly `s`.
  bool is_str(const Ref& r, const char* s) const {
    const u32 n = cstr_len(s);
    return r.present && r.len == n + 1 && v.byte(r.off + n) == 0 && v.eq(r.off, n, s, n);
  }

  /// True when the string list `r` contains `s`.
  bool has_str(const Ref& r, const char* s) const {
    if (!r.present) return false;
    const u32 n = cstr_len(s);
    const u64 end = u64{r.off} + r.len;
    for (u64 p = r.off; p < end;) {
      u32 len;
      if (!v.str_len(p, end, &len)) len = static_cast<u32>(end - p);  // unterminated tail
      if (v.eq(p, len, s, n)) return true;
      p += u64{len} + 1;
    }
    return false;
  }

  /// True when the name of node `n` (up to any '@unit-address') is `s`.
  bool name_base_is(const Level& n, const char* s) const {
    u32 len = 0;
    while (len < n.name_len && v.byte(n.name_off + len) != '@') ++len;
    const u32 sl = cstr_len(s);
    return v.eq(n.name_off, len, s, sl);
  }

  /// Decodes tuple `idx` of the current node's `reg` with `ac` address and
  /// `sc` size cells (size 0 when sc is 0).
  int reg_tuple(u32 ac, u32 sc, u32 idx, u64* addr, u64* size, u32 node_off) const {
    if (ac < 1 || ac > 2 || sc > 2)
      return fail_at(err, "fdt: unsupported #address-cells/#size-cells for reg", node_off);
    const u32 stride = (ac + sc) * 4;
    if (cur.reg.len % stride) return fail_at(err, "fdt: reg length not a multiple of its tuple size", node_off);
    if (idx >= cur.reg.len / stride) return fail_at(err, "fdt: reg has no tuple", node_off);
    const u64 off = cur.reg.off + u64{idx} * stride;
    if (!v.cells(off, ac, addr) || !v.cells(off + ac * 4, sc, size))
      return fail_at(err, "fdt: reg beyond the blob", node_off);
    return 0;
  }

  /// Number of reg tuples of the current node (0 when no reg).
  u32 reg_count(u32 ac, u32 sc) const {
    if (ac < 1 || ac > 2 || sc > 2) return cur.reg.present ? 1 : 0;  // reg_tuple then reports the cells
    return cur.reg.len / ((ac + sc) * 4) + (cur.reg.len % ((ac + sc) * 4) ? 1 : 0);
  }

  /// Translates `*addr`, an address in the child space of node d - 1, to
  /// the root's space through the "ranges" of nodes d - 1 .. 1.
  int translate(u32 d, u64* addr) const {
    for (u32 b = d - 1; b >= 1; --b) {
      const Level& bus = lvl[b];
      const Level& up = lvl[b - 1];
      if (!bus.ranges.present)
        return fail_at(err, "fdt: address not translatable: parent node has no ranges", bus.node_off);
      if (bus.ranges.len == 0) continue;  // identity mapping
      const u32 cac = bus.ac, pac = up.ac, cs = bus.sc;
      if (cac < 1 || cac > 2 || pac < 1 || pac > 2 || cs < 1 || cs > 2)
        return fail_at(err, "fdt: unsupported cell counts for ranges", bus.node_off);
      const u32 stride = (cac + pac + cs) * 4;
      if (bus.ranges.len % stride)
        return fail_at(err, "fdt: ranges length not a multiple of its entry size", bus.node_off);
      bool found = false;
      for (u64 off = bus.ranges.off; off < u64{bus.ranges.off} + bus.ranges.len; off += stride) {
        u64 cba, pba, sz;
        if (!v.cells(off, cac, &cba) || !v.cells(off + cac * 4, pac, &pba) ||
            !v.cells(off + (cac + pac) * 4, cs, &sz))
          return fail_at(err, "fdt: ranges beyond the blob", bus.node_off);
        if (*addr >= cba && *addr - cba < sz) {
          const u64 delta = *addr - cba;
          if (pba + delta < pba) return fail_at(err, "fdt: translated address overflows", bus.node_off);
          *addr = pba + delta;
          found = true;
          break;
        }
      }
      if (!found) return fail_at(err, "fdt: address outside the parent node's ranges", bus.node_off);
    }
    return 0;
  }

  const View& v;
  const Layout& l;
  const char** err;
  Level lvl[kMaxDepth];
  u32 depth = 0;
  NodeProps cur;

 private:
  Kind root_child_kind(const Level& n) const {
    if (name_base_is(n, "chosen")) return kChosen;
    if (name_base_is(n, "aliases")) return kAliases;
    if (name_base_is(n, "cpus")) return kCpus;
    if (name_base_is(n, "reserved-memory")) return kReservedMem;
    if (name_base_is(n, "psci")) return kPsciName;
    return kOther;
  }

  bool name_is(u32 off, u32 len, const char* s) const { return v.eq(off, len, s, cstr_len(s)); }

  // Keeps the properties the walk itself or the extraction interpret.
  int record(u32 d, u32 name, u32 name_len, const Ref& r, u64 pos) {
    if (name_is(name, name_len, "#address-cells") || name_is(name, name_len, "#size-cells")) {
      u32 c;
      if (r.len != 4 || !v.be32(r.off, &c)) return fail_at(err, "fdt: cell count property is not one cell", pos);
      (name_len == 14 ? lvl[d].ac : lvl[d].sc) = c;  // "#address-cells" has 14 chars
    } else if (name_is(name, name_len, "ranges")) {
      lvl[d].ranges = r;
    } else if (name_is(name, name_len, "reg")) {
      cur.reg = r;
    } else if (name_is(name, name_len, "device_type")) {
      cur.device_type = r;
    } else if (name_is(name, name_len, "compatible")) {
      cur.compatible = r;
    } else if (name_is(name, name_len, "status")) {
      cur.status = r;
    } else if (name_is(name, name_len, "method")) {
      cur.method = r;
    } else if (name_is(name, name_len, "no-map")) {
      cur.no_map = true;
    }
    return 0;
  }
};

// Visits nothing: validation only.
struct NullVisitor {
  int begin(Walker&, u32) { return 0; }
  int prop(Walker&, u32, u32, u32, const Ref&) { return 0; }
  int node(Walker&, u32) { return 0; }
  int end(Walker&, u32) { return 0; }
};

// Finds the first node matching an absolute path, then either one of its
// properties or its first reg tuple (translated to a root address).
class PathVisitor {
 public:
  static constexpr int kFound = 1;
  static constexpr int kNotFound = 2;

  /// `path[0..len)` read through `pv` (the blob or the caller's string).
  PathVisitor(const View& pv, u64 path_off, u32 path_len) : pv_(pv) {
    // Split into components, ignoring empty ones ("//", trailing '/').
    u64 i = path_off;
    const u64 end = path_off + path_len;
    while (i < end) {
      while (i < end && pv_.byte(i) == '/') ++i;
      if (i == end) break;
      const u64 s = i;
      while (i < end && pv_.byte(i) != '/') ++i;
      if (ncomp_ == kMaxDepth) {
        too_deep_ = true;
        return;
      }
      comp_off_[ncomp_] = s;
      comp_len_[ncomp_] = static_cast<u32>(i - s);
      ++ncomp_;
    }
  }

  /// Looks for property `name` (read through `nv`) instead of reg.
  void want_prop(const View* nv, u64 name_off, u32 name_len) {
    nv_ = nv;
    name_off_ = name_off;
    name_len_ = name_len;
  }

  bool too_deep() const { return too_deep_; }

  int begin(Walker& w, u32 d) {
    if (d == 0) {
      matched_ = 0;
    } else if (matched_ == d - 1 && d <= ncomp_ && comp_matches(w, w.lvl[d], d - 1)) {
      matched_ = d;
    }
    return 0;
  }

  int prop(Walker& w, u32 d, u32 name, u32 name_len, const Ref& r) {
    if (!nv_ || d != ncomp_ || matched_ != d || name_len != name_len_) return 0;
    for (u32 i = 0; i < name_len; ++i)
      if (w.v.byte(name + i) != nv_->byte(name_off_ + i)) return 0;
    val_ = r;
    return kFound;
  }

  int node(Walker& w, u32 d) {
    if (d != ncomp_ || matched_ != d) return 0;
    if (nv_) return kNotFound;  // first matching node lacks the property
    has_reg_ = w.cur.reg.present;
    if (!has_reg_) return kFound;
    if (d == 0) return fail(w.err, "fdt: the root node has no parent cells for reg");
    if (int r = w.reg_tuple(w.lvl[d - 1].ac, w.lvl[d - 1].sc, 0, &base_, &size_, w.lvl[d].node_off)) return r;
    if (int r = w.translate(d, &base_)) return r;
    return kFound;
  }

  int end(Walker&, u32 d) {
    if (matched_ >= d && d > 0) matched_ = d - 1;
    return 0;
  }

  Ref val_;
  bool has_reg_ = false;
  u64 base_ = 0, size_ = 0;

 private:
  // Exact name, or a component without '@' matching the name's base.
  bool comp_matches(const Walker& w, const Level& n, u32 c) const {
    const u64 co = comp_off_[c];
    const u32 cl = comp_len_[c];
    bool has_at = false;
    for (u32 i = 0; i < cl; ++i) has_at |= pv_.byte(co + i) == '@';
    u32 nl = n.name_len;
    if (!has_at) {
      nl = 0;
      while (nl < n.name_len && w.v.byte(n.name_off + nl) != '@') ++nl;
    }
    if (nl != cl) return false;
    for (u32 i = 0; i < cl; ++i)
      if (w.v.byte(n.name_off + i) != pv_.byte(co + i)) return false;
    return true;
  }

  const View& pv_;
  u64 comp_off_[kMaxDepth] = {};
  u32 comp_len_[kMaxDepth] = {};
  u32 ncomp_ = 0;
  bool too_deep_ = false;
  u32 matched_ = ~0u;
  const View* nv_ = nullptr;
  u64 name_off_ = 0;
  u32 name_len_ = 0;
};

// Extracts BootInfo in the validating walk.
class ParseVisitor {
 public:
  explicit ParseVisitor(BootInfo* out) : out_(out) {}

  int begin(Walker&, u32) { return 0; }
  int end(Walker&, u32) { return 0; }

  int prop(Walker& w, u32 d, u32 name, u32 name_len, const Ref& r) {
    if (d != 1 || w.lvl[1].kind != kChosen) return 0;
    auto is = [&](const char* s) { return w.v.eq(name, name_len, s, cstr_len(s)); };
    if (is("stdout-path")) {
      stdout_ = r;
    } else if (is("linux,stdout-path")) {
      if (!stdout_.present) stdout_ = r;  // the older name, when the newer is absent
    } else if (is("linux,initrd-start") || is("linux,initrd-end")) {
      u64 val;
      if ((r.len != 4 && r.len != 8) || !w.v.cells(r.off, r.len / 4, &val))
        return fail_at(w.err, "fdt: initrd property is neither 32 nor 64 bits", r.off - 12);
      (is("linux,initrd-start") ? out_->initrd_start : out_->initrd_end) = val;
      (is("linux,initrd-start") ? has_initrd_start_ : has_initrd_end_) = true;
    } else if (is("pkvm,verbose")) {
      out_->verbose = true;
    } else if (is("pkvm,selftest")) {
      out_->selftest = true;
    } else if (is("pkvm,test-exit")) {
      out_->test_exit = true;
    }
    return 0;
  }

  int node(Walker& w, u32 d) {
    if (d == 0) return 0;
    const Level& me = w.lvl[d];
    const Level& parent = w.lvl[d - 1];
    const NodeProps& n = w.cur;
    const bool avail = !n.status.present || w.is_str(n.status, "okay") || w.is_str(n.status, "ok");

    if (d == 1 && avail && w.is_str(n.device_type, "memory")) {
      for (u32 i = 0, c = w.reg_count(parent.ac, parent.sc); i < c; ++i) {
        u64 base, size;
        if (int r = w.reg_tuple(parent.ac, parent.sc, i, &base, &size, me.node_off)) return r;
        if (size == 0) continue;
        if (base + size < base) return fail_at(w.err, "fdt: memory reg range overflows", me.node_off);
        if (out_->nr_mem == kMaxMem) return too_big(w.err, "fdt: more than kMaxMem (16) memory regions");
        out_->mem[out_->nr_mem++] = MemRegion{base, size, 0};
      }
    }

    if (d == 2 && parent.kind == kReservedMem && avail && n.reg.present) {
      for (u32 i = 0, c = w.reg_count(parent.ac, parent.sc); i < c; ++i) {
        u64 base, size;
        if (int r = w.reg_tuple(parent.ac, parent.sc, i, &base, &size, me.node_off)) return r;
        if (size == 0) continue;
        if (base + size < base) return fail_at(w.err, "fdt: reserved-memory reg range overflows", me.node_off);
        if (int r = add_reserved(w, base, size, n.no_map)) return r;
      }
    }

    if (d == 2 && parent.kind == kCpus && w.is_str(n.device_type, "cpu")) {
      const bool failed = n.status.present && n.status.len >= 4 && w.v.eq(n.status.off, 4, "fail", 4);
      if (!failed) {
        if (!n.reg.present) return fail_at(w.err, "fdt: cpu node without reg", me.node_off);
        // MPIDR only: take the address of the first tuple, whatever #size-cells says.
        const u32 ac = parent.ac;
        if (ac < 1 || ac > 2 || n.reg.len < ac * 4)
          return fail_at(w.err, "fdt: cpu reg does not match /cpus #address-cells", me.node_off);
        u64 mpidr;
        if (!w.v.cells(n.reg.off, ac, &mpidr)) return fail_at(w.err, "fdt: cpu reg beyond the blob", me.node_off);
        if (out_->nr_cpus == kMaxCpus) return too_big(w.err, "fdt: more than kMaxCpus (8) cpu nodes");
        out_->cpu_mpidr[out_->nr_cpus++] = mpidr;
      }
    }

    const bool psci = (d == 1 && me.kind == kPsciName) || w.has_str(n.compatible, "arm,psci-1.0") ||
                      w.has_str(n.compatible, "arm,psci-0.2") || w.has_str(n.compatible, "arm,psci");
    if (psci && avail && n.method.present && out_->psci == PsciMethod::kNone) {
      if (w.is_str(n.method, "smc")) {
        out_->psci = PsciMethod::kSmc;
      } else if (w.is_str(n.method, "hvc")) {
        out_->psci = PsciMethod::kHvc;
      } else {
        return fail_at(w.err, "fdt: psci method is neither \"smc\" nor \"hvc\"", me.node_off);
      }
    }

    if (!pl011_ && avail && n.reg.present && w.has_str(n.compatible, "arm,pl011")) {
      if (int r = w.reg_tuple(parent.ac, parent.sc, 0, &pl011_base_, &pl011_size_, me.node_off)) return r;
      if (int r = w.translate(d, &pl011_base_)) return r;
      pl011_ = true;
    }
    return 0;
  }

  int add_reserved(Walker& w, u64 base, u64 size, bool no_map) {
    if (out_->nr_reserved == kMaxReserved)
      return too_big(w.err, "fdt: more than kMaxReserved (32) reserved ranges");
    out_->reserved[out_->nr_reserved++] = Reserved{base, size, no_map};
    return 0;
  }

  BootInfo* out_;
  Ref stdout_;
  bool has_initrd_start_ = false, has_initrd_end_ = false;
  bool pl011_ = false;
  u64 pl011_base_ = 0, pl011_size_ = 0;
};

// Each lookup below runs its own walk; noinline keeps only one Walker (about
// 0.7 KiB) on the EL2 stack at a time.

// Looks up alias `name[0..len)` (bytes of the blob) in /aliases: the offset
// and length of its value.
__attribute__((noinline)) int find_alias(const View& v, const Layout& l, u64 name, u32 len, Ref* val,
                                         const char** err) {
  static const char kAliases[] = "/aliases";
  const View av(kAliases, sizeof(kAliases) - 1);
  PathVisitor pv(av, 0, sizeof(kAliases) - 1);
  pv.want_prop(&v, name, len);
  Walker w(v, l, err);
  const int rc = w.run(pv);
  if (rc < 0) return rc;
  if (rc != PathVisitor::kFound) return fail(err, "fdt: stdout-path alias not found in /aliases");
  *val = pv.val_;
  return 0;
}

// First reg tuple, translated to a root address, of the node at the path
// `path[0..len)` (bytes of the blob).
__attribute__((noinline)) int find_node_reg(const View& v, const Layout& l, u64 path, u32 len, u64* base,
                                            u64* size, const char** err) {
  PathVisitor pv(v, path, len);
  if (pv.too_deep()) return fail(err, "fdt: stdout-path names no node");
  Walker w(v, l, err);
  const int rc = w.run(pv);
  if (rc < 0) return rc;
  if (rc != PathVisitor::kFound) return fail(err, "fdt: stdout-path names no node");
  if (!pv.has_reg_) return fail(err, "fdt: stdout-path node has no reg");
  *base = pv.base_;
  *size = pv.size_;
  return 0;
}

// Resolves the /chosen stdout-path value `r` to its node's first reg tuple.
__attribute__((noinline)) int resolve_stdout(const View& v, const Layout& l, const Ref& r, BootInfo* out,
                                             const char** err) {
  u32 slen;
  if (!v.str_len(r.off, u64{r.off} + r.len, &slen)) return fail(err, "fdt: stdout-path is not a string");
  u32 plen = 0;  // up to ":options"
  while (plen < slen && v.byte(r.off + plen) != ':') ++plen;
  if (plen == 0) return fail(err, "fdt: stdout-path is empty");
  u64 path_off = r.off;
  if (v.byte(r.off) != '/') {
    // An alias: its value in /aliases is the full path.
    for (u32 i = 0; i < plen; ++i)
      if (v.byte(r.off + i) == '/') return fail(err, "fdt: stdout-path alias with a sub-path is not supported");
    Ref val;
    if (int rc = find_alias(v, l, r.off, plen, &val, err)) return rc;
    u32 alen;
    if (!v.str_len(val.off, u64{val.off} + val.len, &alen) || alen == 0 || v.byte(val.off) != '/')
      return fail(err, "fdt: stdout-path alias is not an absolute path");
    path_off = val.off;
    plen = alen;
  }
  return find_node_reg(v, l, path_off, plen, &out->uart_base, &out->uart_size, err);
}

// The validating walk that fills `*out`, except the UART when /chosen names
// one: then `*stdout_path` is set for resolve_stdout().
__attribute__((noinline)) int parse_tree(const View& v, const Layout& l, BootInfo* out, Ref* stdout_path,
                                         const char** err) {
  ParseVisitor pv(out);
  Walker w(v, l, err);
  if (int r = w.run(pv)) return r < 0 ? r : fail(err, "fdt: internal walk error");
  if (pv.has_initrd_start_ != pv.has_initrd_end_)
    return fail(err, "fdt: only one of linux,initrd-start and linux,initrd-end");
  if (out->initrd_end < out->initrd_start) return fail(err, "fdt: linux,initrd-end below linux,initrd-start");
  *stdout_path = pv.stdout_;
  if (!pv.stdout_.present && pv.pl011_) {
    out->uart_base = pv.pl011_base_;
    out->uart_size = pv.pl011_size_;
  }
  return 0;
}

void put_be32(u8* p, u32 v) {
  p[0] = static_cast<u8>(v >> 24);
  p[1] = static_cast<u8>(v >> 16);
  p[2] = static_cast<u8>(v >> 8);
  p[3] = static_cast<u8>(v);
}

void put_be64(u8* p, u64 v) {
  put_be32(p, static_cast<u32>(v >> 32));
  put_be32(p + 4, static_cast<u32>(v));
}

}  // namespace

int parse(const void* blob, u64 max_size, BootInfo* out, const char** err) {
  if (!out) return fail(err, "fdt: null BootInfo");
  __builtin_memset(out, 0, sizeof(*out));
  Layout l;
  if (int r = check_header(blob, max_size, &l, err)) return r;
  const View v(blob, l.total);

  // /memreserve/ entries (bounds established by check_header).
  for (u64 off = l.rsv_off; off + kRsvEntry < l.rsv_off + l.rsv_size; off += kRsvEntry) {
    u64 base, size;
    if (!v.be64(off, &base) || !v.be64(off + 8, &size))
      return fail_at(err, "fdt: memreserve entry beyond the blob", off);
    if (size == 0) continue;
    if (base + size < base) return fail_at(err, "fdt: memreserve entry overflows", off);
    if (out->nr_reserved == kMaxReserved)
      return too_big(err, "fdt: more than kMaxReserved (32) reserved ranges");
    out->reserved[out->nr_reserved++] = Reserved{base, size, false};
  }

  Ref stdout_path;
  if (int r = parse_tree(v, l, out, &stdout_path, err)) return r;
  return stdout_path.present ? resolve_stdout(v, l, stdout_path, out, err) : 0;
}

u64 total_size(const void* blob, u64 max_size) {
  Layout l;
  return check_header(blob, max_size, &l, nullptr) ? 0 : l.total;
}

const void* get_prop(const void* blob, u64 max_size, const char* path, const char* name, u32* len) {
  if (!path || !name || path[0] != '/') return nullptr;
  Layout l;
  if (check_header(blob, max_size, &l, nullptr)) return nullptr;
  const View v(blob, l.total);
  const u32 plen = cstr_len(path);
  const View pview(path, plen);
  const View nview(name, cstr_len(name));
  PathVisitor pv(pview, 0, plen);
  if (pv.too_deep()) return nullptr;
  pv.want_prop(&nview, 0, static_cast<u32>(nview.size()));
  Walker w(v, l, nullptr);
  if (w.run(pv) != PathVisitor::kFound) return nullptr;
  if (len) *len = pv.val_.len;
  return v.ptr(pv.val_.off);
}

s64 add_memreserve(const void* src, u64 src_max, void* dst, u64 dst_size, const Reserved* add, u32 n) {
  Layout l;
  if (check_header(src, src_max, &l, nullptr)) return -kEINVAL;
  const View v(src, l.total);
  NullVisitor nv;
  Walker w(v, l, nullptr);
  if (w.run(nv)) return -kEINVAL;
  if (!dst || (n && !add)) return -kEINVAL;
  for (u32 i = 0; i < n; ++i)
    if (add[i].size == 0) return -kEINVAL;  // would read as the terminator
  const uintptr_t s = reinterpret_cast<uintptr_t>(src), d = reinterpret_cast<uintptr_t>(dst);
  if (s < d + dst_size && d < s + l.total) return -kEINVAL;

  // Compact layout: header, reservation block (8-aligned), struct, strings.
  const u64 rsv_off = kHeaderV17;
  const u64 old_bytes = l.rsv_size - kRsvEntry;  // without the terminator
  const u64 rsv_size = old_bytes + u64{n} * kRsvEntry + kRsvEntry;
  const u64 struct_off = rsv_off + rsv_size;
  const u64 strings_off = struct_off + l.struct_size;
  const u64 total = strings_off + l.strings_size;
  if (total > 0xffffffffu || total > dst_size) return -kE2BIG;

  u8* o = static_cast<u8*>(dst);
  put_be32(o + 0, kMagic);
  put_be32(o + 4, static_cast<u32>(total));
  put_be32(o + 8, static_cast<u32>(struct_off));
  put_be32(o + 12, static_cast<u32>(strings_off));
  put_be32(o + 16, static_cast<u32>(rsv_off));
  put_be32(o + 20, 17);
  put_be32(o + 24, 16);
  put_be32(o + 28, l.boot_cpuid);
  put_be32(o + 32, static_cast<u32>(l.strings_size));
  put_be32(o + 36, static_cast<u32>(l.struct_size));
  __builtin_memcpy(o + rsv_off, v.ptr(l.rsv_off), old_bytes);
  u8* e = o + rsv_off + old_bytes;
  for (u32 i = 0; i < n; ++i, e += kRsvEntry) {
    put_be64(e, add[i].base);
    put_be64(e + 8, add[i].size);
  }
  __builtin_memset(e, 0, kRsvEntry);
  __builtin_memcpy(o + struct_off, v.ptr(l.struct_off), l.struct_size);
  __builtin_memcpy(o + strings_off, v.ptr(l.strings_off), l.strings_size);
  return static_cast<s64>(total);
}

}  // namespace pkvm::fdt
