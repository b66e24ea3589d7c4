// `h2tune export`: a client's trained adapter from a run directory as a Hugging Face PEFT LoRA
// adapter directory, or (--merged) as a full model directory with the adapter folded into the
// weights (docs/export.md).
#pragma once

#include "h2tune/app/cli.h"

namespace h2tune {

int cmd_export(const Args& args);

}  // namespace h2tune
