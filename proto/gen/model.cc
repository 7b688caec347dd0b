// SPDX-License-Identifier: Apache-2.0
// Builds the ABI model from a FileDescriptor and checks every ABI rule, so a
// mistake in the .proto is reported with its file and line instead of turning
// into a wrong header.
#include "proto/gen/model.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <algorithm>
#include <map>
#include <set>

#include "proto/pkvm_abi_options.pb.h"

namespace pkvm::gen {
namespace {

namespace pb = google::protobuf;

// Field numbers of descriptor.proto, used to address SourceCodeInfo paths.
constexpr int kFileMessageType = 4;
constexpr int kFileEnumType = 5;
constexpr int kFileService = 6;
constexpr int kFilePackage = 2;
constexpr int kFileSyntax = 12;
constexpr int kMessageField = 2;
constexpr int kFieldOptions = 8;
constexpr int kServiceMethod = 2;
constexpr int kMethodOptions = 4;
constexpr int kEnumValue = 2;

// Identifiers the generated C and C++ cannot use as parameter or member names.
const std::set<std::string>& Reserved() {
  static const std::set<std::string> kWords = {
      "auto", "bool", "break", "case", "char", "class", "const", "continue", "default",
      "delete", "do", "double", "else", "enum", "extern", "float", "for", "goto", "if",
      "inline", "int", "long", "new", "operator", "private", "protected", "public",
      "register", "restrict", "return", "short", "signed", "sizeof", "static", "struct",
      "switch", "template", "this", "typedef", "union", "unsigned", "void", "volatile",
      "while", "a", "r", "res", "regs", "ret", "h", "rec", "errno", "reply", "out"};
  return kWords;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\n");
  return s.substr(b, e - b + 1);
}

// Joins a comment's lines into one paragraph; blank lines start a new one.
std::string CommentText(const std::string& raw) {
  std::string out;
  size_t pos = 0;
  bool para = false;
  while (pos <= raw.size()) {
    size_t nl = raw.find('\n', pos);
    if (nl == std::string::npos) nl = raw.size();
    std::string line = Trim(raw.substr(pos, nl - pos));
    pos = nl + 1;
    if (line.empty()) {
      para = !out.empty();
      continue;
    }
    if (!out.empty()) out += para ? "\n\n" : " ";
    para = false;
    out += line;
  }
  return out;
}

// Source positions of one file, addressed by SourceCodeInfo paths.
class Locations {
 public:
  explicit Locations(const pb::FileDescriptor* file) {
    pb::FileDescriptorProto proto;
    file->CopySourceCodeInfoTo(&proto);
    for (const auto& loc : proto.source_code_info().location()) {
      std::vector<int> path(loc.path().begin(), loc.path().end());
      if (loc.span_size() == 0 || lines_.count(path)) continue;
      lines_[path] = loc.span(0) + 1;
      docs_[path] = CommentText(loc.leading_comments().empty() ? loc.trailing_comments()
                                                               : loc.leading_comments());
    }
  }

  // Line of the element at `path`, or of its closest enclosing element.
  int Line(std::vector<int> path) const {
    while (!path.empty()) {
      auto it = lines_.find(path);
      if (it != lines_.end()) return it->second;
      path.pop_back();
    }
    return 1;
  }

  // The comment attached to the element at `path` (leading, else trailing).
  std::string Doc(const std::vector<int>& path) const {
    auto it = docs_.find(path);
    return it == docs_.end() ? "" : it->second;
  }

 private:
  std::map<std::vector<int>, int> lines_;
  std::map<std::vector<int>, std::string> docs_;
};

// Collects problems as "<file>:<line>: <what>: <problem>" lines.
class Problems {
 public:
  explicit Problems(std::string file) : file_(std::move(file)) {}
  void Add(int line, const std::string& what, const std::string& problem) {
    list_.push_back(file_ + ":" + std::to_string(line) + ": " + what + ": " + problem);
  }
  bool empty() const { return list_.empty(); }
  std::string Joined() const {
    std::string out;
    for (const auto& l : list_) out += (out.empty() ? "" : "\n") + l;
    return out;
  }

 private:
  std::string file_;
  std::vector<std::string> list_;
};

std::string Hex(uint64_t v) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  do {
    s.insert(s.begin(), kDigits[v & 0xf]);
    v >>= 4;
  } while (v);
  return "0x" + s;
}

// Path of a top-level message in SourceCodeInfo terms.
std::vector<int> MessagePath(const pb::Descriptor* m) {
  return {kFileMessageType, m->index()};
}

std::vector<int> FieldPath(const pb::FieldDescriptor* f) {
  auto p = MessagePath(f->containing_type());
  p.insert(p.end(), {kMessageField, f->index()});
  return p;
}

class Builder {
 public:
  Builder(const pb::FileDescriptor* file, Abi* abi)
      : file_(file), abi_(abi), loc_(file), problems_(file->name()) {}

  bool Run(std::string* error) {
    abi_->proto_path = file_->name();
    std::string base = file_->name();
    if (size_t slash = base.rfind('/'); slash != std::string::npos) base = base.substr(slash + 1);
    if (base.size() > 6 && base.substr(base.size() - 6) == ".proto") base.resize(base.size() - 6);
    abi_->base = base;
    abi_->overview = loc_.Doc({kFilePackage});
    FileOptions();
    Enums();
    Calls();
    Layouts();
    if (!problems_.empty()) {
      *error = problems_.Joined();
      return false;
    }
    return true;
  }

 private:
  int PackageLine() const {
    int line = loc_.Line({kFilePackage});
    return line > 1 ? line : loc_.Line({kFileSyntax});
  }

  void FileOptions() {
    const auto& opts = file_->options();
    if (!opts.HasExtension(pkvm::opt::abi_version)) {
      problems_.Add(PackageLine(), "file",
                    "missing ABI version: add option (pkvm.opt.abi_version) = { major: M minor: N }");
    } else {
      const auto& v = opts.GetExtension(pkvm::opt::abi_version);
      abi_->major = v.major();
      abi_->minor = v.minor();
    }
    abi_->max_pages = opts.GetExtension(pkvm::opt::max_pages);
  }

  void Enums() {
    const pb::EnumDescriptor* errno_enum = nullptr;
    for (int i = 0; i < file_->enum_type_count(); ++i) {
      const pb::EnumDescriptor* e = file_->enum_type(i);
      std::vector<int> path = {kFileEnumType, i};
      if (e->options().GetExtension(pkvm::opt::errno_enum)) {
        if (errno_enum) {
          problems_.Add(loc_.Line(path), "enum " + e->name(),
                        "a second errno enum (the first is " + errno_enum->name() + ")");
          continue;
        }
        errno_enum = e;
        ErrnoEnum(e, path);
        continue;
      }
      ConstGroup g{e->name(), loc_.Doc(path), {}};
      for (int v = 0; v < e->value_count(); ++v) {
        std::vector<int> vp = path;
        vp.insert(vp.end(), {kEnumValue, v});
        g.values.push_back({e->value(v)->name(), e->value(v)->number(), loc_.Doc(vp)});
      }
      abi_->consts.push_back(std::move(g));
    }
    if (!errno_enum && file_->service_count() > 0) {
      problems_.Add(PackageLine(), "file",
                    "no errno enum: mark one enum with option (pkvm.opt.errno_enum) = true");
    }
  }

  void ErrnoEnum(const pb::EnumDescriptor* e, const std::vector<int>& path) {
    const std::string prefix = Upper(SnakeCase(e->name())) + "_";
    for (int v = 0; v < e->value_count(); ++v) {
      const pb::EnumValueDescriptor* ev = e->value(v);
      std::vector<int> vp = path;
      vp.insert(vp.end(), {kEnumValue, v});
      std::string name = ev->name();
      if (name.compare(0, prefix.size(), prefix) == 0) name = name.substr(prefix.size());
      if (ev->number() == 0) continue;  // success, not an errno
      if (ev->number() < 0 || ev->number() > 4095) {
        problems_.Add(loc_.Line(vp), "errno " + name,
                      "value " + std::to_string(ev->number()) + " outside 1..4095");
        continue;
      }
      std::string meaning = ev->options().GetExtension(pkvm::opt::meaning);
      if (meaning.empty()) meaning = loc_.Doc(vp);
      errno_by_name_[name] = ev->number();
      abi_->errnos.push_back({name, ev->number(), meaning});
    }
    std::sort(abi_->errnos.begin(), abi_->errnos.end(),
              [](const Errno& a, const Errno& b) { return a.value < b.value; });
  }

  // Reads the register fields of a request (max_reg 6) or response (3).
  std::vector<RegField> RegFields(const pb::Descriptor* m, int max_reg, const std::string& call,
                                  const char* role) {
    std::vector<RegField> out;
    std::map<int, std::string> used;
    const std::string what = "call '" + call + "'";
    const bool report = checked_.insert({m, max_reg}).second;  // shared messages: once
    for (int i = 0; i < m->field_count(); ++i) {
      const pb::FieldDescriptor* f = m->field(i);
      const auto path = FieldPath(f);
      const std::string fwhat = what + ": " + role + " " + m->name() + "." + f->name();
      const int line = loc_.Line(path);
      auto bad = [&](const std::string& p) {
        if (report) problems_.Add(line, fwhat, p);
      };
      if (f->type() != pb::FieldDescriptor::TYPE_UINT64 || f->is_repeated()) {
        bad("must be a singular uint64 (a register holds 64 bits)");
        continue;
      }
      if (Reserved().count(f->name())) {
        bad("name '" + f->name() + "' is reserved in the generated C/C++");
        continue;
      }
      auto reg_path = path;
      reg_path.insert(reg_path.end(), {kFieldOptions, pkvm::opt::reg.number()});
      const int reg_line = loc_.Line(reg_path);
      if (!f->options().HasExtension(pkvm::opt::reg)) {
        bad("missing register: add [(pkvm.opt.reg) = 1.." + std::to_string(max_reg) + "]");
        continue;
      }
      const uint32_t reg = f->options().GetExtension(pkvm::opt::reg);
      if (reg < 1 || reg > static_cast<uint32_t>(max_reg)) {
        if (report) {
          problems_.Add(reg_line, fwhat,
                        "register " + std::to_string(reg) + " out of range: " + role +
                            "s use x1..x" + std::to_string(max_reg) +
                            " (x0 carries the function id and the status)");
        }
        continue;
      }
      if (auto it = used.find(static_cast<int>(reg)); it != used.end()) {
        if (report) {
          problems_.Add(reg_line, fwhat,
                        "register x" + std::to_string(reg) + " already carries '" + it->second + "'");
        }
        continue;
      }
      used[static_cast<int>(reg)] = f->name();
      out.push_back({f->name(), static_cast<int>(reg), loc_.Doc(path)});
    }
    return out;
  }

  void Calls() {
    std::map<uint32_t, std::pair<std::string, int>> by_fn;  // fn -> (call, line)
    std::map<std::string, int> by_name;
    for (int s = 0; s < file_->service_count(); ++s) {
      const pb::ServiceDescriptor* svc = file_->service(s);
      for (int m = 0; m < svc->method_count(); ++m) {
        const pb::MethodDescriptor* md = svc->method(m);
        const std::vector<int> path = {kFileService, s, kServiceMethod, m};
        auto opt_path = [&](int ext, int index = -1) {
          auto p = path;
          p.insert(p.end(), {kMethodOptions, ext});
          if (index >= 0) p.push_back(index);
          return p;
        };
        Call c;
        c.rpc = md->name();
        c.name = SnakeCase(md->name());
        c.doc = loc_.Doc(path);
        const std::string what = "call '" + c.name + "'";
        const int line = loc_.Line(path);
        if (auto it = by_name.find(c.name); it != by_name.end()) {
          problems_.Add(line, what,
                        "name already used by the call at line " + std::to_string(it->second));
        }
        by_name.emplace(c.name, line);
        const auto& opts = md->options();
        c.test_only = opts.GetExtension(pkvm::opt::test_only);
        if (md->client_streaming() || md->server_streaming()) {
          problems_.Add(line, what, "streaming rpcs cannot be hypercalls");
        }
        if (!opts.HasExtension(pkvm::opt::fn)) {
          problems_.Add(line, what, "missing function number: add option (pkvm.opt.fn) = N");
        } else {
          c.fn = opts.GetExtension(pkvm::opt::fn);
          const int fn_line = loc_.Line(opt_path(pkvm::opt::fn.number()));
          if (c.fn > kMaxFunctionNumber) {
            problems_.Add(fn_line, what,
                          "function number " + Hex(c.fn) + " outside 0.." + Hex(kMaxFunctionNumber) +
                              " (ids are 0xc6000000 + n with a 16-bit n; 0xff00..0xffff are "
                              "SMCCC general queries)");
          } else if (auto it = by_fn.find(c.fn); it != by_fn.end()) {
            problems_.Add(fn_line, what,
                          "function number " + std::to_string(c.fn) + " already used by call '" +
                              it->second.first + "' (line " + std::to_string(it->second.second) +
                              ")");
          } else {
            by_fn[c.fn] = {c.name, fn_line};
          }
          c.id = FunctionId(c.fn);
        }
        if (md->input_type()->options().GetExtension(pkvm::opt::layout) != pkvm::opt::LAYOUT_NONE ||
            md->output_type()->options().GetExtension(pkvm::opt::layout) !=
                pkvm::opt::LAYOUT_NONE) {
          problems_.Add(line, what, "a layout message cannot be a request or a response");
        } else if (md->input_type()->file() != file_ || md->output_type()->file() != file_) {
          problems_.Add(line, what, "request and response must be declared in this file");
        } else {
          c.args = RegFields(md->input_type(), 6, c.name, "argument");
          c.results = RegFields(md->output_type(), 3, c.name, "result");
        }
        std::set<std::string> seen;
        for (int i = 0; i < opts.ExtensionSize(pkvm::opt::err); ++i) {
          const auto& e = opts.GetExtension(pkvm::opt::err, i);
          const int eline = loc_.Line(opt_path(pkvm::opt::err.number(), i));
          auto it = errno_by_name_.find(e.code());
          if (it == errno_by_name_.end()) {
            problems_.Add(eline, what, "unknown errno '" + e.code() + "' in (pkvm.opt.err)");
            continue;
          }
          if (!seen.insert(e.code()).second) {
            problems_.Add(eline, what, "errno " + e.code() + " listed twice");
            continue;
          }
          c.errors.push_back({e.code(), it->second, e.when()});
        }
        abi_->calls.push_back(std::move(c));
      }
    }
    const bool any_regular = std::any_of(abi_->calls.begin(), abi_->calls.end(),
                                         [](const Call& c) { return !c.test_only; });
    if (!any_regular) {
      problems_.Add(PackageLine(), "file",
                    "no calls: declare a service with at least one rpc that is not test_only");
    }
    std::stable_sort(abi_->calls.begin(), abi_->calls.end(),
                     [](const Call& a, const Call& b) { return a.fn < b.fn; });
  }

  void Layouts() {
    for (int i = 0; i < file_->message_type_count(); ++i) {
      const pb::Descriptor* m = file_->message_type(i);
      const auto layout = m->options().GetExtension(pkvm::opt::layout);
      if (layout == pkvm::opt::LAYOUT_PACKED64) Packed(m);
      if (layout == pkvm::opt::LAYOUT_PAGE_SLOTS) Slots(m);
    }
  }

  void Packed(const pb::Descriptor* m) {
    BitLayout l{SnakeCase(m->name()), loc_.Doc(MessagePath(m)), {}};
    uint64_t used = 0;
    for (int i = 0; i < m->field_count(); ++i) {
      const pb::FieldDescriptor* f = m->field(i);
      const std::string what = "layout " + m->name() + "." + f->name();
      const int line = loc_.Line(FieldPath(f));
      if (f->type() != pb::FieldDescriptor::TYPE_UINT64 || f->is_repeated()) {
        problems_.Add(line, what, "fields of a packed record must be singular uint64");
        continue;
      }
      if (Reserved().count(f->name())) {
        problems_.Add(line, what, "name '" + f->name() + "' is reserved in the generated C/C++");
        continue;
      }
      if (!f->options().HasExtension(pkvm::opt::bits)) {
        problems_.Add(line, what, "missing [(pkvm.opt.bits) = { lsb: L width: W }]");
        continue;
      }
      const auto& b = f->options().GetExtension(pkvm::opt::bits);
      if (b.width() < 1 || b.lsb() >= 64 || b.width() > 64 - b.lsb()) {
        problems_.Add(line, what, "bits lsb " + std::to_string(b.lsb()) + " width " +
                                      std::to_string(b.width()) + " do not fit in 64 bits");
        continue;
      }
      const uint64_t mask = (b.width() == 64 ? ~0ull : ((1ull << b.width()) - 1)) << b.lsb();
      if (used & mask) {
        problems_.Add(line, what, "bits overlap another field");
        continue;
      }
      used |= mask;
      l.fields.push_back({f->name(), static_cast<int>(b.lsb()), static_cast<int>(b.width()),
                          loc_.Doc(FieldPath(f))});
    }
    abi_->bit_layouts.push_back(std::move(l));
  }

  void Slots(const pb::Descriptor* m) {
    constexpr int kSlotsPerPage = 4096 / 8;
    SlotLayout l{SnakeCase(m->name()), loc_.Doc(MessagePath(m)), {}, 0};
    std::vector<std::string> owner(kSlotsPerPage);
    for (int i = 0; i < m->field_count(); ++i) {
      const pb::FieldDescriptor* f = m->field(i);
      const std::string what = "layout " + m->name() + "." + f->name();
      const int line = loc_.Line(FieldPath(f));
      if (f->type() != pb::FieldDescriptor::TYPE_UINT64) {
        problems_.Add(line, what, "slot fields must be uint64");
        continue;
      }
      if (!f->options().HasExtension(pkvm::opt::slot)) {
        problems_.Add(line, what, "missing [(pkvm.opt.slot) = N]");
        continue;
      }
      const uint32_t slot = f->options().GetExtension(pkvm::opt::slot);
      uint32_t count = 1;
      if (f->is_repeated()) {
        count = f->options().GetExtension(pkvm::opt::slots);
        if (count == 0) {
          problems_.Add(line, what, "a repeated slot field needs [(pkvm.opt.slots) = COUNT]");
          continue;
        }
      } else if (f->options().HasExtension(pkvm::opt::slots)) {
        problems_.Add(line, what, "(pkvm.opt.slots) is only for repeated fields");
        continue;
      }
      if (slot >= kSlotsPerPage || count > kSlotsPerPage - slot) {
        problems_.Add(line, what, "slots " + std::to_string(slot) + ".." +
                                      std::to_string(uint64_t{slot} + count - 1) +
                                      " do not fit in one 4 KiB page (512 slots)");
        continue;
      }
      bool clash = false;
      for (uint32_t s = slot; s < slot + count && !clash; ++s) {
        if (!owner[s].empty()) {
          problems_.Add(line, what,
                        "slot " + std::to_string(s) + " already used by '" + owner[s] + "'");
          clash = true;
        }
      }
      if (clash) continue;
      for (uint32_t s = slot; s < slot + count; ++s) owner[s] = f->name();
      l.fields.push_back({f->name(), static_cast<int>(slot), static_cast<int>(count),
                          f->is_repeated(), loc_.Doc(FieldPath(f))});
      l.end = std::max(l.end, static_cast<int>(slot + count));
    }
    abi_->slot_layouts.push_back(std::move(l));
  }

  const pb::FileDescriptor* file_;
  Abi* abi_;
  Locations loc_;
  Problems problems_;
  std::map<std::string, int> errno_by_name_;
  std::set<std::pair<const pb::Descriptor*, int>> checked_;
};

}  // namespace

std::string SnakeCase(const std::string& camel) {
  std::string out;
  for (size_t i = 0; i < camel.size(); ++i) {
    const char c = camel[i];
    const bool upper = c >= 'A' && c <= 'Z';
    if (upper && i > 0) {
      const char prev = camel[i - 1];
      const bool prev_lower_or_digit = (prev >= 'a' && prev <= 'z') || (prev >= '0' && prev <= '9');
      const bool next_lower = i + 1 < camel.size() && camel[i + 1] >= 'a' && camel[i + 1] <= 'z';
      const bool prev_upper = prev >= 'A' && prev <= 'Z';
      if (prev_lower_or_digit || (prev_upper && next_lower)) out += '_';
    }
    out += upper ? static_cast<char>(c - 'A' + 'a') : c;
  }
  return out;
}

std::string Upper(const std::string& s) {
  std::string out = s;
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

bool BuildAbi(const google::protobuf::FileDescriptor* file, Abi* abi, std::string* error) {
  return Builder(file, abi).Run(error);
}

}  // namespace pkvm::gen
