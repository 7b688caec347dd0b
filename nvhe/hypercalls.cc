// SPDX-License-Identifier: Apache-2.0
// Placeholder replaced by the generated-ABI dispatch (see proto/).
#include "nvhe/hyp.h"

namespace pkvm {

void handle_hvc(HostCtx* c) { c->regs[0] = u64(-1); }

}  // namespace pkvm
