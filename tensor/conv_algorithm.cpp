// conv_algorithm.cpp: the thread-local convolution algorithm policy (tensor/conv_algorithm.h).
#include "tensor/conv_algorithm.h"

#include "tensor/error.h"

namespace engine {

namespace {
thread_local ConvAlgorithm current = ConvAlgorithm::im2col;
}  // namespace

ConvAlgorithm conv_algorithm() { return current; }
void set_conv_algorithm(ConvAlgorithm a) { current = a; }

const char* conv_algorithm_name(ConvAlgorithm a) {
  switch (a) {
    case ConvAlgorithm::im2col: return "im2col";
    case ConvAlgorithm::cudnn: return "cudnn";
  }
  return "?";
}

ConvAlgorithm parse_conv_algorithm(const std::string& name, const std::string& key) {
  if (name == "im2col") return ConvAlgorithm::im2col;
  if (name == "cudnn") return ConvAlgorithm::cudnn;
  throw Error(fmt::format("{}: unknown conv algorithm \"{}\" (expected \"im2col\" or \"cudnn\")", key, name));
}

bool cudnn_built() {
#if ENGINE_WITH_CUDNN
  return true;
#else
  return false;
#endif
}

void require_cudnn(const std::string& who) {
#if defined(ENGINE_CUDA_EMULATION)
  throw Error(fmt::format(
      "{}: conv algorithm \"cudnn\" is not available on the emulated CUDA device (it has no cuDNN); use "
      "\"im2col\", or build for a real GPU with -DENGINE_CUDA=ON -DENGINE_CUDNN=ON",
      who));
#elif !ENGINE_WITH_CUDNN
  throw Error(fmt::format(
      "{}: conv algorithm \"cudnn\" needs a build with cuDNN: configure with -DENGINE_CUDA=ON -DENGINE_CUDNN=ON "
      "(cudnn.h and libcudnn beside the CUDA toolkit, or CUDNN_ROOT), or use \"im2col\"",
      who));
#else
  (void)who;
#endif
}

}  // namespace engine
