// zsris_rt._maskops: the per-mask CPU work between engine calls, each op with a NumPy twin in
// runtime/ that it is tested against. Inputs are validated in Python (runtime/maskops/__init__.py) and
// again here for shape and dtype; loops touch no Python object and run with the GIL released.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace py = pybind11;

namespace zsris {

// C-contiguous arrays only: a strided view must be copied by the caller, never read wrongly.
template <typename T>
using carray = py::array_t<T, py::array::c_style>;

// Run f(i) for i in [0, n) on up to hardware_concurrency threads, at most one per
// `min_per_thread` items. Threads take the next item as they finish one, so items of unequal
// cost (crops of different boxes, rows of a triangle) still keep every core busy.
template <typename F>
void parallel_for(int64_t n, F f, int64_t min_per_thread = 1) {
    int64_t threads = std::max<int64_t>(1, std::thread::hardware_concurrency());
    threads = std::min(threads, std::max<int64_t>(1, n / std::max<int64_t>(min_per_thread, 1)));
    if (threads <= 1) {
        for (int64_t i = 0; i < n; ++i) f(i);
        return;
    }
    std::atomic<int64_t> next{0};
    auto work = [&] {
        for (int64_t i = next++; i < n; i = next++) f(i);
    };
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& thread : pool) thread.join();
}

// A function compiled once per listed target, the loader picking the best the CPU has (GCC and
// Clang on x86-64 Linux, through ifunc); elsewhere one baseline build.
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define ZSRIS_TARGET_CLONES(...) __attribute__((target_clones(__VA_ARGS__)))
#else
#define ZSRIS_TARGET_CLONES(...)
#endif

// Largest crop side or grid an op will allocate: beyond it, sizes overflow before NumPy can refuse.
constexpr int64_t kMaxSide = 4096;

// One-line errors for wrong shapes, mirrored by the Python side's checks.
inline void require(bool ok, const std::string& message) {
    if (!ok) throw std::invalid_argument(message);
}

void register_boxes(py::module_& m);   // boxes.cpp: tight_boxes
void register_crops(py::module_& m);   // crops.cpp: masked_crops, mask_grid
void register_logits(py::module_& m);  // logits.cpp: logit_statistics, logit_masks
void register_iou(py::module_& m);     // iou.cpp: mask_iou, mask_nms
void register_rle(py::module_& m);     // rle.cpp: rle_encode, rle_decode
void register_feature_maps(py::module_& m);  // feature_maps.cpp: masked_feature_maps

}  // namespace zsris
