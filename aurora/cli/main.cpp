// main.cpp: the `aurora` executable (aurora/cli/commands.h explains the layout).
#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "aurora/cli/commands.h"
#include "tensor/error.h"

namespace engine::cli {

namespace {

std::vector<std::pair<int, CommandSetup>>& registry() {
  static std::vector<std::pair<int, CommandSetup>> commands;
  return commands;
}

std::unique_ptr<dist::Comm>& world_ptr() {
  static std::unique_ptr<dist::Comm> comm;
  return comm;
}

// One line on stderr; under mpirun the rank is named and every rank is ended.
[[noreturn]] void fail(const std::string& message) {
  auto& comm = world_ptr();
  if (comm && comm->size() > 1) comm->abort(fmt::format("aurora: error: [rank {}] {}", comm->rank(), message), 1);
  std::fprintf(stderr, "aurora: error: %s\n", message.c_str());
  std::fflush(stderr);
  std::exit(1);
}

}  // namespace

RegisterCommand::RegisterCommand(int order, CommandSetup setup) { registry().emplace_back(order, std::move(setup)); }

dist::Comm& world() {
  auto& comm = world_ptr();
  if (!comm) comm = dist::make_local_comm();
  return *comm;
}

}  // namespace engine::cli

int main(int argc, char** argv) {
  using namespace engine;
  CLI::App app{"aurora: train, sample and evaluate the Aurora text-to-image GAN"};
  app.require_subcommand(1);
  auto& commands = cli::registry();
  std::stable_sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [order, setup] : commands) setup(app);
  try {
    cli::world_ptr() = dist::init_from_environment(&argc, &argv);
    app.parse(argc, argv);  // subcommand callbacks run here
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Usage errors: one line naming the problem, plus where to look.
    if (e.get_exit_code() == 0) return app.exit(e);
    cli::fail(std::string(e.what()) + " (see aurora --help)");
  } catch (const std::exception& e) {
    cli::fail(e.what());
  }
  return 0;
}
