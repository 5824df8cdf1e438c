// ditgen: the command line. Parses flags, then makes one call into the engine.
#include <CLI/CLI.hpp>

#include "lib/runtime/error.h"
#include "lib/runtime/log.h"
#include "models/verify_cases.h"

int main(int argc, char** argv) {
  CLI::App app{"ditgen: diffusion transformers on many GPUs"};
  app.require_subcommand(1);

  ditgen::VerifyRequest vreq;
  auto* verify = app.add_subcommand("verify", "Check a golden case folder against our implementation");
  verify->add_option("case", vreq.dir, "case folder (config.json, io.safetensors, weights)")->required();
  verify->add_option("--kind", vreq.kind, "case kind, when the folder name does not tell");

  CLI11_PARSE(app, argc, argv);
  try {
    if (verify->parsed()) return ditgen::run_verify(vreq);
  } catch (const ditgen::Error& e) {
    ditgen::log::error_line(e.what());
    return 2;
  }
  return 0;
}
