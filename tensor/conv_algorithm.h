// conv_algorithm.h: the convolution algorithm policy (the CUDA backend's "conv as im2col + GEMM
// by default, cuDNN as an optional path behind a flag"; DESIGN.md section 4; docs/cuda.md
// "cuDNN convolution"): which implementation conv2d, conv_transpose2d and conv2d_weight use for
// CUDA tensors.
//
//   ConvAlgorithm::im2col  im2col / col2im kernels + cuBLASLt GEMMs (tensor/cuda/conv.h). Default.
//   ConvAlgorithm::cudnn   cuDNN's legacy convolution API (tensor/cuda/cudnn_conv.h): forward,
//                          backward data (= conv_transpose2d) and backward filter (= conv2d_weight),
//                          deterministic algorithms only. Problems cuDNN cannot run exactly as the
//                          engine defines them (bf16 GEMM arithmetic, tensors over 2^31 - 1
//                          elements, empty tensors, no deterministic algorithm) fall back to im2col.
//
// Like the matmul precision policy (tensor/precision.h) it is per thread (each thread starts at
// im2col), set with set_conv_algorithm or the RAII ConvAlgorithmScope, and it is read when an op
// runs: a backward() runs its conv_transpose2d / conv2d_weight under the policy current at that
// time (the trainer's per-phase scope covers the forward and the backward of a phase).
//
// CPU tensors ignore the policy: the CPU has one convolution (im2col + OpenBLAS), so a cudnn scope
// around CPU work changes nothing (the matmul policy's tf32 mode behaves the same way). Setting
// cudnn never throws; a conv on a CUDA tensor under cudnn in a build without cuDNN (CUDA build
// with ENGINE_CUDNN=OFF, or the emulated device, which never has it) throws the error of
// require_cudnn, and the trainer checks it at start (resolve_train_device).
#pragma once
#include <cstdint>
#include <string>

namespace engine {

enum class ConvAlgorithm : uint8_t { im2col, cudnn };

// The calling thread's current policy (im2col unless a ConvAlgorithmScope is alive).
ConvAlgorithm conv_algorithm();
// Sets the calling thread's policy; prefer ConvAlgorithmScope.
void set_conv_algorithm(ConvAlgorithm a);
// "im2col", "cudnn".
const char* conv_algorithm_name(ConvAlgorithm a);
// The algorithm named `name` ("im2col" or "cudnn"); throws engine::Error naming `key` otherwise.
ConvAlgorithm parse_conv_algorithm(const std::string& name, const std::string& key);

// Whether this build has the cuDNN path (ENGINE_CUDNN=ON in a real CUDA build).
bool cudnn_built();
// Throws engine::Error unless cudnn_built(): "<who>: conv algorithm \"cudnn\" needs a build with
// cuDNN (...how to configure...)". No-op in a cuDNN build.
void require_cudnn(const std::string& who);

// Sets the policy for its lifetime and restores the previous one on exit (scopes nest).
class ConvAlgorithmScope {
 public:
  explicit ConvAlgorithmScope(ConvAlgorithm a) : previous_(conv_algorithm()) { set_conv_algorithm(a); }
  ~ConvAlgorithmScope() { set_conv_algorithm(previous_); }
  ConvAlgorithmScope(const ConvAlgorithmScope&) = delete;
  ConvAlgorithmScope& operator=(const ConvAlgorithmScope&) = delete;

 private:
  ConvAlgorithm previous_;
};

}  // namespace engine
