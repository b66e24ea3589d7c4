#include "h2tune/app/cli.h"
#include "h2tune/core/error.h"
namespace h2tune {
int cmd_train(const Args&) { throw Error("train: not built yet"); }
int cmd_pretrain(const Args&) { throw Error("pretrain: not built yet"); }
int cmd_tokenizer(const Args&) { throw Error("tokenizer: not built yet"); }
int cmd_eval(const Args&) { throw Error("eval: not built yet"); }
int cmd_report(const Args&) { throw Error("report: not built yet"); }
}
