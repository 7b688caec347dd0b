// SPDX-License-Identifier: Apache-2.0
// Snapshot parsing and the compatibility rules: anything recorded that changes
// or disappears is breaking (major bump); anything new is an addition (minor
// bump); the version never goes down.
#include "proto/gen/snapshot.h"

#include <set>
#include <sstream>

namespace pkvm::gen {
namespace {

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string part;
  std::istringstream in(s);
  while (std::getline(in, part, sep)) out.push_back(part);
  return out;
}

std::string Join(const std::vector<std::string>& v) {
  if (v.empty()) return "-";
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

bool ParseInt(const std::string& s, int* out) {
  if (s.empty() || s.size() > 9) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

}  // namespace

bool ParseSnapshot(const std::string& text, Snapshot* out, std::string* error) {
  *out = Snapshot();
  int lineno = 0;
  for (const std::string& raw : Split(text, '\n')) {
    ++lineno;
    if (raw.empty() || raw[0] == '#') continue;
    std::istringstream in(raw);
    std::vector<std::string> tok;
    for (std::string t; in >> t;) tok.push_back(t);
    auto fail = [&](const std::string& why) {
      *error = "line " + std::to_string(lineno) + ": " + why + ": " + raw;
      return false;
    };
    if (tok.empty()) continue;
    const std::string& kind = tok[0];
    if (kind == "version") {
      if (tok.size() != 3 || !ParseInt(tok[1], &out->major) || !ParseInt(tok[2], &out->minor)) {
        return fail("expected 'version MAJOR MINOR'");
      }
    } else if (kind == "call") {
      // call NAME ID args A results R [test_only]
      if ((tok.size() != 7 && tok.size() != 8) || tok[3] != "args" || tok[5] != "results" ||
          (tok.size() == 8 && tok[7] != "test_only")) {
        return fail("expected 'call NAME ID args A results R [test_only]'");
      }
      SnapshotCall c;
      c.id = tok[2];
      c.args = tok[4];
      if (tok[6] != "-") c.results = Split(tok[6], ',');
      c.test_only = tok.size() == 8;
      if (!out->calls.emplace(tok[1], c).second) return fail("call listed twice");
    } else if (kind == "errno" || kind == "bits" || kind == "slot" || kind == "const" ||
               kind == "limit") {
      if (tok.size() < 3) return fail("expected '" + kind + " NAME VALUE...'");
      std::string value;
      for (size_t i = 2; i < tok.size(); ++i) value += (i > 2 ? " " : "") + tok[i];
      if (!out->entries.emplace(kind + " " + tok[1], value).second) return fail("listed twice");
    } else {
      return fail("unknown line kind '" + kind + "'");
    }
  }
  if (out->major < 0) {
    *error = "no 'version MAJOR MINOR' line";
    return false;
  }
  return true;
}

CompatReport CheckCompat(const Snapshot& o, const Snapshot& n) {
  CompatReport r;
  for (const auto& [name, oc] : o.calls) {
    auto it = n.calls.find(name);
    if (it == n.calls.end()) {
      r.breaking.push_back("call " + name + " removed");
      continue;
    }
    const SnapshotCall& nc = it->second;
    if (oc.id != nc.id) r.breaking.push_back("call " + name + ": id " + oc.id + " -> " + nc.id);
    if (oc.args != nc.args) {
      r.breaking.push_back("call " + name + ": arguments " + oc.args + " -> " + nc.args);
    }
    if (oc.results != nc.results) {
      const std::set<std::string> now(nc.results.begin(), nc.results.end());
      bool kept = true;
      for (const auto& res : oc.results) kept = kept && now.count(res);
      (kept ? r.additions : r.breaking)
          .push_back("call " + name + ": results " + Join(oc.results) + " -> " + Join(nc.results));
    }
    if (oc.test_only && !nc.test_only) r.additions.push_back("call " + name + ": no longer test-only");
    if (!oc.test_only && nc.test_only) r.breaking.push_back("call " + name + ": became test-only");
  }
  for (const auto& [name, nc] : n.calls) {
    if (!o.calls.count(name)) r.additions.push_back("call " + name + " added (" + nc.id + ")");
  }
  for (const auto& [key, value] : o.entries) {
    auto it = n.entries.find(key);
    if (it == n.entries.end()) {
      r.breaking.push_back(key + " removed");
    } else if (it->second != value) {
      r.breaking.push_back(key + ": " + value + " -> " + it->second);
    }
  }
  for (const auto& [key, value] : n.entries) {
    if (!o.entries.count(key)) r.additions.push_back(key + " added (" + value + ")");
  }

  const std::string from = std::to_string(o.major) + "." + std::to_string(o.minor);
  const std::string to = std::to_string(n.major) + "." + std::to_string(n.minor);
  if (n.major < o.major || (n.major == o.major && n.minor < o.minor)) {
    r.problems.push_back("the version went down: " + from + " -> " + to);
  } else if (n.major == o.major) {
    if (!r.breaking.empty()) {
      r.problems.push_back("breaking changes need a new major version (" + from + " -> " +
                           std::to_string(o.major + 1) + ".0), the version is " + to);
    } else if (!r.additions.empty() && n.minor == o.minor) {
      r.problems.push_back("additions need a new minor version (" + from + " -> " +
                           std::to_string(o.major) + "." + std::to_string(o.minor + 1) + ")");
    }
  }
  return r;
}

std::string CompatReport::Describe() const {
  std::string s;
  for (const auto& p : problems) s += "error: " + p + "\n";
  for (const auto& b : breaking) s += "  breaking: " + b + "\n";
  for (const auto& a : additions) s += "  added: " + a + "\n";
  return s;
}

}  // namespace pkvm::gen
