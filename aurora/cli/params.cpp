// params.cpp: `aurora params --config FILE`: parameter counts of a preset's generator and
// discriminator, built in meta mode (nothing allocated, so paper64's 1.5 B parameters cost
// nothing), per top-level part and per synthesis resolution (docs/aurora-spec.md section 10).
#include <cstdio>
#include <string>
#include <vector>

#include "aurora/cli/commands.h"
#include "aurora/config.h"
#include "aurora/discriminator.h"
#include "aurora/generator.h"

namespace engine::cli {
namespace {

void print_row(const std::string& name, int64_t n) { std::printf("  %-28s %12.2f M\n", name.c_str(), n / 1e6); }

void run_params(const std::string& config_path, const std::vector<std::string>& overrides) {
  nlohmann::json root = aurora::read_config_json(config_path);
  for (const std::string& o : overrides) aurora::apply_override(root, o);
  if (root.contains("generator")) {
    aurora::Generator g(aurora::parse_generator_config(root["generator"]));
    std::printf("generator (%s):\n", config_path.c_str());
    for (auto& [name, child] : g.named_children()) print_row(name, child->num_parameters());
    for (auto& [name, child] : g.synthesis.named_children()) print_row("synthesis." + name, child->num_parameters());
    print_row("total", g.num_parameters());
  }
  if (root.contains("discriminator")) {
    aurora::Discriminator d(aurora::parse_discriminator_config(root["discriminator"]));
    std::printf("discriminator (%s):\n", config_path.c_str());
    for (auto& [name, child] : d.named_children()) print_row(name, child->num_parameters());
    print_row("total", d.num_parameters());
  }
}

const RegisterCommand registered(90, [](CLI::App& app) {
  struct Options {
    std::string config;
    std::vector<std::string> overrides;
  };
  auto opts = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("params", "count the parameters of a preset (meta mode, nothing allocated)");
  sub->add_option("--config", opts->config, "JSON preset, e.g. configs/paper64.json")->required();
  sub->add_option("--set", opts->overrides, "override a key: --set generator.w_dim=256");
  sub->callback([opts] { run_params(opts->config, opts->overrides); });
});

}  // namespace
}  // namespace engine::cli
