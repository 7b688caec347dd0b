// SPDX-License-Identifier: Apache-2.0
// Emitters of protoc-gen-pkvm: each turns a validated Abi model into the text
// of one generated file. They never fail; BuildAbi has checked everything.
#pragma once

#include <string>

#include "proto/gen/model.h"

namespace pkvm::gen {

/// `<base>.h`: freestanding C11/C++ constants and packing helpers.
std::string EmitCHeader(const Abi& abi);

/// `<base>_dispatch.h`: freestanding C++20 EL2 dispatcher that refuses to
/// compile without a handler for every call.
std::string EmitDispatchHeader(const Abi& abi);

/// `<base>_client.h`: host C++ client with one typed method per call.
std::string EmitClientHeader(const Abi& abi);

/// Markdown ABI reference.
std::string EmitDoc(const Abi& abi);

/// Compatibility snapshot: one line per call, errno, layout field, constant.
std::string EmitSnapshot(const Abi& abi);

}  // namespace pkvm::gen
