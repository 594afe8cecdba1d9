// cuda_api.h: the one include for the CUDA runtime API. A real build gets <cuda_runtime.h>; the
// emulated-device build (-DENGINE_CUDA=EMULATE, docs/cuda.md) gets the host implementation in
// tensor/cuda/emulation/. Files of the CUDA backend include this, never <cuda_runtime*.h>.
#pragma once
#if defined(ENGINE_CUDA_EMULATION)
#include "tensor/cuda/emulation/cuda_runtime_emulated.h"
#else
#include <cuda_runtime.h>
#endif
