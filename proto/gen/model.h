// SPDX-License-Identifier: Apache-2.0
// The hypercall ABI as protoc-gen-pkvm sees it: a plain model built from a
// FileDescriptor and its custom options (proto/pkvm_abi_options.proto), fully
// validated, so that the emitters never have to check anything.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace google::protobuf {
class FileDescriptor;
}

namespace pkvm::gen {

/// A request or response field and the register it travels in.
struct RegField {
  std::string name;  ///< snake_case field name
  int reg = 0;       ///< 1..6 for arguments, 1..3 for results
  std::string doc;
};

/// An errno a call may return, with the condition.
struct ErrUse {
  std::string code;  ///< errno name without prefix, e.g. "EPERM"
  int value = 0;     ///< positive errno number
  std::string when;
};

/// One hypercall (an rpc of the service).
struct Call {
  std::string name;   ///< snake_case, e.g. "host_share_hyp"
  std::string rpc;    ///< the rpc's name, e.g. "HostShareHyp"
  uint32_t fn = 0;    ///< SMCCC function number n
  uint64_t id = 0;    ///< 0xC6000000 + n
  bool test_only = false;
  std::vector<RegField> args;     ///< in declaration order
  std::vector<RegField> results;  ///< in declaration order
  std::vector<ErrUse> errors;
  std::string doc;
};

/// One value of the errno enum.
struct Errno {
  std::string name;  ///< without the enum prefix, e.g. "EPERM"
  int value = 0;
  std::string meaning;
};

/// A field of a packed 64-bit record.
struct BitField {
  std::string name;
  int lsb = 0;
  int width = 0;
  std::string doc;
};

/// A message laid out as one packed 64-bit word.
struct BitLayout {
  std::string name;  ///< snake_case message name
  std::string doc;
  std::vector<BitField> fields;
};

/// A field of a page of 64-bit slots.
struct SlotField {
  std::string name;
  int slot = 0;
  int count = 1;  ///< > 1 only for repeated fields
  bool repeated = false;
  std::string doc;
};

/// A message laid out as a page of 64-bit slots.
struct SlotLayout {
  std::string name;  ///< snake_case message name
  std::string doc;
  std::vector<SlotField> fields;
  int end = 0;  ///< one past the highest slot used
};

/// A named constant from any other top-level enum.
struct Constant {
  std::string name;  ///< the enum value's name, e.g. "OWNER_HOST"
  int64_t value = 0;
  std::string doc;
};

/// An enum other than the errno enum: a group of constants.
struct ConstGroup {
  std::string name;  ///< the enum's name
  std::string doc;
  std::vector<Constant> values;
};

/// The whole ABI of one .proto file.
struct Abi {
  std::string proto_path;  ///< as protoc names it, e.g. "proto/pkvm_abi.proto"
  std::string base;        ///< file name without directory and ".proto"
  std::string overview;    ///< comment above the package statement
  uint32_t major = 0;
  uint32_t minor = 0;
  uint32_t max_pages = 0;  ///< 0 when the file states no limit
  std::vector<Call> calls;  ///< sorted by function number
  std::vector<Errno> errnos;  ///< sorted by value, without 0
  std::vector<BitLayout> bit_layouts;
  std::vector<SlotLayout> slot_layouts;
  std::vector<ConstGroup> consts;
};

/// Function id of SMCCC function number n in this ABI.
constexpr uint64_t FunctionId(uint32_t n) { return 0xC6000000ull + n; }

/// Highest function number a call may use: 0xFF00..0xFFFF are the owner's
/// SMCCC general queries (call count, UID, revision).
inline constexpr uint32_t kMaxFunctionNumber = 0xFEFF;

/// Builds and validates the model of `file`. On failure returns false and sets
/// `error` to one line per problem, each "<file>:<line>: <what>: <problem>".
bool BuildAbi(const google::protobuf::FileDescriptor* file, Abi* abi, std::string* error);

/// Converts a CamelCase name to snake_case ("DumpHostStage2" -> "dump_host_stage2").
std::string SnakeCase(const std::string& camel);

/// Upper-cases an identifier.
std::string Upper(const std::string& s);

}  // namespace pkvm::gen
