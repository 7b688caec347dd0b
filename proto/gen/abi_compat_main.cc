// SPDX-License-Identifier: Apache-2.0
// abi_compat: compares two ABI snapshots under the compatibility rules.
//
//   abi_compat OLD NEW            report; exit 1 when NEW may not replace OLD
//   abi_compat --update OLD NEW   also copy NEW over OLD when it may
//
// `ninja proto-snapshot` runs the second form, so the committed snapshot only
// ever moves forward through a change the version numbers allow.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "proto/gen/snapshot.h"

namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  bool update = false;
  int arg = 1;
  if (arg < argc && std::string(argv[arg]) == "--update") {
    update = true;
    ++arg;
  }
  if (argc - arg != 2) {
    std::cerr << "usage: abi_compat [--update] OLD_SNAPSHOT NEW_SNAPSHOT\n";
    return 2;
  }
  const std::string old_path = argv[arg], new_path = argv[arg + 1];
  std::string old_text, new_text, error;
  if (!ReadFile(old_path, &old_text) || !ReadFile(new_path, &new_text)) {
    std::cerr << "abi_compat: cannot read " << old_path << " or " << new_path << "\n";
    return 2;
  }
  pkvm::gen::Snapshot old_snap, new_snap;
  if (!pkvm::gen::ParseSnapshot(old_text, &old_snap, &error)) {
    std::cerr << old_path << ": " << error << "\n";
    return 2;
  }
  if (!pkvm::gen::ParseSnapshot(new_text, &new_snap, &error)) {
    std::cerr << new_path << ": " << error << "\n";
    return 2;
  }
  const auto report = pkvm::gen::CheckCompat(old_snap, new_snap);
  std::cout << report.Describe();
  if (!report.ok()) {
    std::cerr << "abi_compat: " << new_path << " may not replace " << old_path << "\n";
    return 1;
  }
  if (old_text == new_text) {
    std::cout << "abi_compat: " << old_path << " is up to date\n";
    return 0;
  }
  if (!update) {
    std::cout << "abi_compat: compatible, but " << old_path << " is out of date\n";
    return 0;
  }
  std::ofstream out(old_path, std::ios::binary | std::ios::trunc);
  out << new_text;
  if (!out.flush()) {
    std::cerr << "abi_compat: cannot write " << old_path << "\n";
    return 2;
  }
  std::cout << "abi_compat: updated " << old_path << "\n";
  return 0;
}
