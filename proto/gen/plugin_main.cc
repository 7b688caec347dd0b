// SPDX-License-Identifier: Apache-2.0
// protoc-gen-pkvm: a protoc plugin that turns a hypercall ABI description
// (proto/pkvm_abi.proto) into C and C++ headers, a markdown reference and a
// compatibility snapshot.
//
//   protoc -I. --plugin=protoc-gen-pkvm=BIN
//          --pkvm_out=[doc=NAME][,snapshot=NAME]:DIR file.proto
//
// writes DIR/<base>.h, DIR/<base>_dispatch.h, DIR/<base>_client.h, the doc
// (default DIR/<base>.md) and, when asked, the snapshot. Every file is checked
// before anything is written, so a bad .proto produces errors and no output.
#include <google/protobuf/compiler/code_generator.h>
#include <google/protobuf/compiler/plugin.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/zero_copy_stream.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "proto/gen/emit.h"
#include "proto/gen/model.h"

namespace pkvm::gen {
namespace {

namespace pb = google::protobuf;

// Writes `text` to a new output file of the response.
void Write(pb::compiler::GeneratorContext* ctx, const std::string& name, const std::string& text) {
  std::unique_ptr<pb::io::ZeroCopyOutputStream> out(ctx->Open(name));
  void* data;
  int size;
  size_t done = 0;
  while (done < text.size() && out->Next(&data, &size)) {
    const size_t n = std::min(text.size() - done, static_cast<size_t>(size));
    std::copy_n(text.data() + done, n, static_cast<char*>(data));
    done += n;
    if (n < static_cast<size_t>(size)) out->BackUp(size - static_cast<int>(n));
  }
}

class PkvmGenerator : public pb::compiler::CodeGenerator {
 public:
  /// Single-file entry point required by the interface; GenerateAll does the work.
  bool Generate(const pb::FileDescriptor* file, const std::string& parameter,
                pb::compiler::GeneratorContext* ctx, std::string* error) const override {
    return GenerateAll({file}, parameter, ctx, error);
  }

  /// Validates every file first and writes only when all of them are valid,
  /// reporting errors without protoc's "<file>: " prefix (ours carry file:line).
  bool GenerateAll(const std::vector<const pb::FileDescriptor*>& files, const std::string& parameter,
                   pb::compiler::GeneratorContext* ctx, std::string* error) const override {
    std::vector<std::pair<std::string, std::string>> params;
    pb::compiler::ParseGeneratorParameter(parameter, &params);
    std::string doc_name, snapshot_name;
    for (const auto& [key, value] : params) {
      if (key == "doc") {
        doc_name = value;
      } else if (key == "snapshot") {
        snapshot_name = value;
      } else {
        *error = "unknown parameter '" + key + "' (known: doc=NAME, snapshot=NAME)";
        return false;
      }
    }
    if (files.size() > 1 && (!doc_name.empty() || !snapshot_name.empty())) {
      *error = "doc= and snapshot= name one output: run one .proto at a time";
      return false;
    }
    std::vector<Abi> abis(files.size());
    std::string all_errors;
    for (size_t i = 0; i < files.size(); ++i) {
      std::string err;
      if (!BuildAbi(files[i], &abis[i], &err)) all_errors += (all_errors.empty() ? "" : "\n") + err;
    }
    if (!all_errors.empty()) {
      // protoc prefixes the first line with "--pkvm_out: "; start on a new
      // line so every problem reads "<file>:<line>: ...".
      *error = "invalid hypercall ABI\n" + all_errors;
      return false;
    }
    for (const Abi& abi : abis) {
      Write(ctx, abi.base + ".h", EmitCHeader(abi));
      Write(ctx, abi.base + "_dispatch.h", EmitDispatchHeader(abi));
      Write(ctx, abi.base + "_client.h", EmitClientHeader(abi));
      Write(ctx, doc_name.empty() ? abi.base + ".md" : doc_name, EmitDoc(abi));
      if (!snapshot_name.empty()) Write(ctx, snapshot_name, EmitSnapshot(abi));
    }
    return true;
  }

  /// The generator copes with proto3 optional fields (it ignores presence).
  uint64_t GetSupportedFeatures() const override { return FEATURE_PROTO3_OPTIONAL; }
};

}  // namespace
}  // namespace pkvm::gen

int main(int argc, char* argv[]) {
  pkvm::gen::PkvmGenerator generator;
  return google::protobuf::compiler::PluginMain(argc, argv, &generator);
}
