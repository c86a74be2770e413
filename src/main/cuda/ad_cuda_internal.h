/*
 * ad_cuda_internal.h: helpers shared by the translation units of libaligndistil_cuda.so.
 * Nothing here is exported; the public contract is native/include/aligndistil.h.
 */
#ifndef AD_CUDA_INTERNAL_H
#define AD_CUDA_INTERNAL_H

#include <cuda_runtime.h>

/* Records "<where>: <cudaGetErrorName>: <cudaGetErrorString>" in this thread's last-error buffer
 * (read back through ad_cuda_last_error) and returns AD_ERR_CUDA. */
int ad_cuda_record_error(const char* where, cudaError_t err);

/* Records a plain message (argument validation) in the same buffer; returns `code`. */
int ad_cuda_record_message(int code, const char* message);

#endif /* AD_CUDA_INTERNAL_H */
