// SPDX-License-Identifier: Apache-2.0
// The ABI compatibility snapshot (proto/abi_snapshot.txt): parsing and the
// rules that decide whether a new ABI may replace an old one under its
// version numbers. No protobuf dependency, so tests and tools link it alone.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace pkvm::gen {

/// One call line: "call NAME ID args A results R [test_only]".
struct SnapshotCall {
  std::string id;
  std::string args;                  ///< "pfn:x1,nr:x2" or "-"
  std::vector<std::string> results;  ///< e.g. {"sum:x1"}
  bool test_only = false;
};

/// A parsed snapshot.
struct Snapshot {
  int major = -1;
  int minor = -1;
  std::map<std::string, SnapshotCall> calls;     ///< by call name
  std::map<std::string, std::string> entries;    ///< "errno EPERM" -> "1", etc.
};

/// Parses snapshot text. Returns false and sets `error` ("line N: ...") on a
/// malformed line or a missing version line.
bool ParseSnapshot(const std::string& text, Snapshot* out, std::string* error);

/// What changed between two snapshots and whether the version allows it.
struct CompatReport {
  std::vector<std::string> breaking;   ///< changes that need a major bump
  std::vector<std::string> additions;  ///< changes that need a minor bump
  std::vector<std::string> problems;   ///< rule violations; empty = compatible
  /// True when the new snapshot may replace the old one.
  bool ok() const { return problems.empty(); }
  /// True when nothing but (possibly) the version changed.
  bool unchanged() const { return breaking.empty() && additions.empty(); }
  /// Human-readable report: problems first, then the changes.
  std::string Describe() const;
};

/// Applies the rules of docs/abi.md "Compatibility" to old -> new.
CompatReport CheckCompat(const Snapshot& old_snap, const Snapshot& new_snap);

}  // namespace pkvm::gen
