// SPDX-License-Identifier: Apache-2.0
// pkvmctl: a small command-line option parser ("--name value", "--flag").
#pragma once

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "pkvmctl.h"

namespace pkvmctl {

class Args {
 public:
  /// Parses argv[first..argc). `flags` take no value; everything else
  /// starting with "--" takes one. Unknown options are an error.
  Args(int argc, char** argv, int first, std::set<std::string> valued, std::set<std::string> flags) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        help_ = true;
      } else if (a.rfind("--", 0) == 0) {
        std::string name = a.substr(2);
        if (flags.count(name)) {
          opts_[name] = "1";
        } else if (valued.count(name)) {
          if (i + 1 >= argc) {
            error_ = "option " + a + " needs a value";
            return;
          }
          opts_[name] = argv[++i];
        } else {
          error_ = "unknown option " + a;
          return;
        }
      } else {
        pos_.push_back(a);
      }
    }
  }

  bool help() const { return help_; }
  const std::string& error() const { return error_; }
  bool has(const std::string& n) const { return opts_.count(n) != 0; }
  std::string str(const std::string& n, const std::string& def = "") const {
    auto it = opts_.find(n);
    return it == opts_.end() ? def : it->second;
  }
  /// Parses a number (decimal, 0x hex, or a negative decimal as two's complement).
  u64 num(const std::string& n, u64 def = 0) const {
    auto it = opts_.find(n);
    if (it == opts_.end()) return def;
    u64 v;
    if (!parse_num(it->second, &v)) {
      fprintf(stderr, "pkvmctl: --%s: not a number: %s\n", n.c_str(), it->second.c_str());
      exit(1);
    }
    return v;
  }
  const std::vector<std::string>& pos() const { return pos_; }

  static bool parse_num(const std::string& s, u64* v) {
    if (s.empty()) return false;
    char* end = nullptr;
    if (s[0] == '-') {
      *v = u64(strtoll(s.c_str(), &end, 0));
    } else {
      *v = strtoull(s.c_str(), &end, 0);
    }
    return end && *end == 0;
  }

 private:
  std::map<std::string, std::string> opts_;
  std::vector<std::string> pos_;
  bool help_ = false;
  std::string error_;
};

}  // namespace pkvmctl
