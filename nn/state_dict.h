// state_dict.h: a module tree's parameters and buffers by name, saved to and loaded from
// safetensors (PyTorch users can open the files; names follow the state_dict convention).
#pragma once
#include <map>
#include <string>

#include "io/safetensors.h"
#include "nn/module.h"

namespace engine::nn {

// Every parameter and buffer of `root`, by full name (views of the live tensors, no copies).
io::NamedTensors state_dict(Module& root);

// Write state_dict(root) to `path` atomically.
void save_state_dict(Module& root, const std::string& path, const std::map<std::string, std::string>& metadata = {});

// Copy tensors into the parameters and buffers of `root` (materialized). Every name of the module
// must be present with the same shape (dtype is converted); with `strict`, unknown names in the
// file are errors too. Errors name the file, the key and both shapes.
void load_state_dict(Module& root, const io::SafetensorsFile& file, bool strict = true);
void load_state_dict(Module& root, const std::string& path, bool strict = true);

}  // namespace engine::nn
