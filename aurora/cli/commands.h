// commands.h: how the `aurora` command line is put together (DESIGN.md sections 12 and 13).
//
// One file per subcommand (train.cpp, sample.cpp, interpolate.cpp, fid.cpp, ...). Each defines
//   static const RegisterCommand registered(ORDER, [](CLI::App& app) {
//     CLI::App* sub = app.add_subcommand("train", "one-line help");
//     ... options ...
//     sub->callback([...] { ... });
//   });
// main.cpp creates the app, runs every registered setup in ORDER (the order of `aurora --help`),
// parses, and turns any engine::Error / std::exception escaping a callback into one line
//   aurora: error: <message>
// on stderr and exit code 1. Under mpirun the failing rank then ends the whole job
// (dist::Comm::abort) instead of leaving the other ranks waiting in a collective.
#pragma once
#include <functional>

#include <CLI/CLI.hpp>

#include "dist/comm.h"

namespace engine::cli {

using CommandSetup = std::function<void(CLI::App& app)>;

struct RegisterCommand {
  RegisterCommand(int order, CommandSetup setup);
};

// The process's communicator (dist::init_from_environment in main; LocalComm without mpirun).
dist::Comm& world();

}  // namespace engine::cli
