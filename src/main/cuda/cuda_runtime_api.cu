/*
 * cuda_runtime_api.cu: the thin runtime helpers of libaligndistil_cuda.so (device queries, memory,
 * streams, events), the NVTX v3 shim and the profiler control, so Java can drive a GPU through FFM
 * without any other binding.
 *
 * Every function returns AD_OK or an AD_ERR_* code and never exits or prints. A failing CUDA call stores
 * its text in a thread-local buffer that ad_cuda_last_error() returns (sticky until the next failure on
 * the same thread, "" when none has happened). No kernel lives here; nothing is allocated except by
 * ad_cuda_malloc / ad_cuda_stream_create / ad_cuda_event_create on the caller's request. The stream
 * arguments are cudaStream_t handles (NULL = the legacy default stream).
 */
#include "aligndistil.h"
#include "ad_cuda_internal.h"

#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <stdio.h>
#include <string.h>

namespace {

thread_local char g_last_error[512] = "";

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
inline cudaEvent_t as_event(void* e) { return static_cast<cudaEvent_t>(e); }

/* Checks a CUDA call; on failure records it and returns AD_ERR_CUDA from the enclosing function. */
#define AD_CUDA_TRY(call)                                                          \
    do {                                                                           \
        cudaError_t ad_err_ = (call);                                              \
        if (ad_err_ != cudaSuccess) return ad_cuda_record_error(#call, ad_err_);   \
    } while (0)

#define AD_REQUIRE(cond, msg)                                                      \
    do {                                                                           \
        if (!(cond)) return ad_cuda_record_message(AD_ERR_INVALID_ARGUMENT, msg);  \
    } while (0)

}  // namespace

int ad_cuda_record_error(const char* where, cudaError_t err) {
    snprintf(g_last_error, sizeof g_last_error, "%s: %s: %s", where ? where : "?",
             cudaGetErrorName(err), cudaGetErrorString(err));
    return AD_ERR_CUDA;
}

int ad_cuda_record_message(int code, const char* message) {
    snprintf(g_last_error, sizeof g_last_error, "%s", message ? message : "");
    return code;
}

extern "C" {

AD_EXPORT const char* ad_cuda_last_error(void) { return g_last_error; }

AD_EXPORT int32_t ad_cuda_device_count(int32_t* count) {
    AD_REQUIRE(count != nullptr, "ad_cuda_device_count: count is NULL");
    *count = 0;
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
        (void)cudaGetLastError(); /* not sticky; clear it so later calls do not see it */
        return AD_OK;             /* no driver or no device: zero devices, not an error */
    }
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return ad_cuda_record_error("cudaGetDeviceCount", err);
    }
    *count = n;
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_device_name(int32_t device, char* buf, int64_t len) {
    AD_REQUIRE(buf != nullptr && len >= 1, "ad_cuda_device_name: buf is NULL or len < 1");
    buf[0] = '\0';
    cudaDeviceProp prop;
    AD_CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    size_t n = strnlen(prop.name, sizeof prop.name);
    if (n > static_cast<size_t>(len - 1)) n = static_cast<size_t>(len - 1);
    memcpy(buf, prop.name, n);
    buf[n] = '\0';
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_device_info(int32_t device, int64_t* info) {
    AD_REQUIRE(info != nullptr, "ad_cuda_device_info: info is NULL");
    cudaDeviceProp prop;
    AD_CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    int l2 = 0, driver = 0, runtime = 0;
    AD_CUDA_TRY(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    AD_CUDA_TRY(cudaDriverGetVersion(&driver));
    AD_CUDA_TRY(cudaRuntimeGetVersion(&runtime));
    info[0] = prop.major;
    info[1] = prop.minor;
    info[2] = prop.multiProcessorCount;
    info[3] = static_cast<int64_t>(prop.totalGlobalMem);
    info[4] = l2;
    info[5] = driver;
    info[6] = runtime;
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_set_device(int32_t device) {
    AD_CUDA_TRY(cudaSetDevice(device));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_malloc(void** ptr, int64_t bytes) {
    AD_REQUIRE(ptr != nullptr && bytes >= 0, "ad_cuda_malloc: ptr is NULL or bytes < 0");
    *ptr = nullptr;
    if (bytes == 0) return AD_OK;
    AD_CUDA_TRY(cudaMalloc(ptr, static_cast<size_t>(bytes)));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_free(void* ptr) {
    if (ptr == nullptr) return AD_OK;
    AD_CUDA_TRY(cudaFree(ptr));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_memcpy_htod(void* dst, const void* src, int64_t bytes, void* stream) {
    AD_REQUIRE(bytes >= 0 && (bytes == 0 || (dst && src)), "ad_cuda_memcpy_htod: bad arguments");
    if (bytes == 0) return AD_OK;
    AD_CUDA_TRY(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, as_stream(stream)));
    AD_CUDA_TRY(cudaStreamSynchronize(as_stream(stream)));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_memcpy_dtoh(void* dst, const void* src, int64_t bytes, void* stream) {
    AD_REQUIRE(bytes >= 0 && (bytes == 0 || (dst && src)), "ad_cuda_memcpy_dtoh: bad arguments");
    if (bytes == 0) return AD_OK;
    AD_CUDA_TRY(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, as_stream(stream)));
    AD_CUDA_TRY(cudaStreamSynchronize(as_stream(stream)));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_memcpy_dtod(void* dst, const void* src, int64_t bytes, void* stream) {
    AD_REQUIRE(bytes >= 0 && (bytes == 0 || (dst && src)), "ad_cuda_memcpy_dtod: bad arguments");
    if (bytes == 0) return AD_OK;
    AD_CUDA_TRY(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, as_stream(stream)));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_memset(void* dst, int32_t value, int64_t bytes, void* stream) {
    AD_REQUIRE(bytes >= 0 && (bytes == 0 || dst), "ad_cuda_memset: bad arguments");
    if (bytes == 0) return AD_OK;
    AD_CUDA_TRY(cudaMemsetAsync(dst, value, static_cast<size_t>(bytes), as_stream(stream)));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_stream_create(void** stream) {
    AD_REQUIRE(stream != nullptr, "ad_cuda_stream_create: stream is NULL");
    *stream = nullptr;
    cudaStream_t s = nullptr;
    /* A blocking stream: it still orders with the legacy default stream (NULL), which Java may also use. */
    AD_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamDefault));
    *stream = s;
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_stream_destroy(void* stream) {
    if (stream == nullptr) return AD_OK;
    AD_CUDA_TRY(cudaStreamDestroy(as_stream(stream)));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_stream_synchronize(void* stream) {
    AD_CUDA_TRY(cudaStreamSynchronize(as_stream(stream)));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_event_create(void** event) {
    AD_REQUIRE(event != nullptr, "ad_cuda_event_create: event is NULL");
    *event = nullptr;
    cudaEvent_t e = nullptr;
    AD_CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventDefault)); /* timing enabled */
    *event = e;
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_event_destroy(void* event) {
    if (event == nullptr) return AD_OK;
    AD_CUDA_TRY(cudaEventDestroy(as_event(event)));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_event_record(void* event, void* stream) {
    AD_REQUIRE(event != nullptr, "ad_cuda_event_record: event is NULL");
    AD_CUDA_TRY(cudaEventRecord(as_event(event), as_stream(stream)));
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_event_elapsed_ms(void* start, void* end, float* ms) {
    AD_REQUIRE(start && end && ms, "ad_cuda_event_elapsed_ms: NULL argument");
    *ms = 0.0f;
    AD_CUDA_TRY(cudaEventSynchronize(as_event(end)));
    AD_CUDA_TRY(cudaEventElapsedTime(ms, as_event(start), as_event(end)));
    return AD_OK;
}

/* NVTX v3 is header-only: these inline calls reach nsys / ncu through their injection library and cost
 * next to nothing when no tool is attached. The return value of nvtxRangePushA (the nesting depth, or a
 * negative number without a tool) carries no error, so it is not reported. */
AD_EXPORT int32_t ad_nvtx_push(const char* name) {
    AD_REQUIRE(name != nullptr, "ad_nvtx_push: name is NULL");
    (void)nvtxRangePushA(name);
    return AD_OK;
}

AD_EXPORT int32_t ad_nvtx_pop(void) {
    (void)nvtxRangePop();
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_profiler_start(void) {
    AD_CUDA_TRY(cudaProfilerStart());
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_profiler_stop(void) {
    AD_CUDA_TRY(cudaProfilerStop());
    return AD_OK;
}

}  // extern "C"
