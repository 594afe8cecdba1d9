// state_dict.cpp: saving and loading a module tree's tensors by name.
#include "nn/state_dict.h"

#include <set>

#include "autograd/grad_mode.h"
#include "tensor/ops.h"

namespace engine::nn {

io::NamedTensors state_dict(Module& root) {
  io::NamedTensors out;
  for (auto& [name, p] : root.named_parameters()) {
    ENGINE_CHECK(p->value.defined(), "state_dict: parameter '{}' is not materialized", name);
    out.emplace_back(name, p->value.detach());
  }
  for (auto& [name, b] : root.named_buffers()) {
    ENGINE_CHECK(b->value.defined(), "state_dict: buffer '{}' is not materialized", name);
    out.emplace_back(name, b->value.detach());
  }
  return out;
}

void save_state_dict(Module& root, const std::string& path, const std::map<std::string, std::string>& metadata) {
  io::NamedTensors tensors = state_dict(root);
  for (auto& [name, t] : tensors)
    if (!t.device().is_cpu()) t = t.to(Device::cpu());  // safetensors writes host bytes
  io::save_safetensors(path, tensors, metadata);
}

void load_state_dict(Module& root, const io::SafetensorsFile& file, bool strict) {
  std::set<std::string> used;
  autograd::NoGradGuard no_grad;
  for (auto& [name, target] : state_dict(root)) {
    ENGINE_CHECK(file.contains(name), "load_state_dict: {} has no tensor '{}'", file.source, name);
    const Tensor& src = file.at(name);
    ENGINE_CHECK(src.sizes() == target.sizes(), "load_state_dict: '{}' in {} has shape {}, the model expects {}", name,
                 file.source, src.sizes().str(), target.sizes().str());
    copy_(target, src.device() == target.device() ? src : src.to(target.device()));  // file (host) -> model device
    used.insert(name);
  }
  if (strict)
    for (auto& [name, t] : file.tensors)
      ENGINE_CHECK(used.count(name), "load_state_dict: {} has a tensor '{}' that the model does not have", file.source,
                   name);
}

void load_state_dict(Module& root, const std::string& path, bool strict) {
  load_state_dict(root, io::read_safetensors(path), strict);
}

}  // namespace engine::nn
