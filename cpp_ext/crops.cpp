// Masked crops and mask grids (runtime/maskops/crops.py), bit for bit.
//
// Both are PyTorch's bilinear kernel (half-pixel centres, no antialias) done separably as the
// twins do it: rows first, then columns, each pass as a * (1 - w) + b * w in float32 (setup.py
// builds with -ffp-contract=off, so no FMA changes the last bit). Only the source rows that the
// taps read are touched, so a crop costs O(S · min(box width, 2S)) whatever the image size.
#include <optional>

#include <pybind11/stl.h>

#include "maskops.h"

namespace zsris {
namespace {

// runtime/bilinear.py's source_taps: the source indices (lo, hi) and the weight of hi.
struct Taps {
    std::vector<int64_t> lo, hi;
    std::vector<float> weight;
};

// PyTorch's float32 index arithmetic, as the twin emulates it: a float32 scale, the index
// computed in double and rounded once to float32.
Taps source_taps(int64_t in_size, int64_t out_size, int64_t start) {
    Taps taps{std::vector<int64_t>(out_size), std::vector<int64_t>(out_size),
              std::vector<float>(out_size)};
    const double scale = static_cast<float>(static_cast<double>(in_size) / out_size);
    for (int64_t i = 0; i < out_size; ++i) {
        const double index = (static_cast<double>(i) + 0.5) * scale - 0.5;
        const float src = std::max(static_cast<float>(index), 0.0f);
        const int64_t lo = std::min(static_cast<int64_t>(src), in_size - 1);
        taps.lo[i] = lo + start;
        taps.hi[i] = std::min(lo + 1, in_size - 1) + start;
        taps.weight[i] = std::clamp(src - static_cast<float>(lo), 0.0f, 1.0f);
    }
    return taps;
}

inline float lerp(float a, float b, float w) { return a * (1.0f - w) + b * w; }

// Masks are read as bytes: GCC vectorises a select on uint8_t but not on bool, and a NumPy bool
// holding another byte than 0 or 1 (a view of uint8) still reads as true, never as UB.
const uint8_t* mask_bytes(const carray<bool>& masks) {
    return reinterpret_cast<const uint8_t*>(masks.data());
}

// Output rows per task: few enough that K = 1 still spreads over the cores, enough that each
// task's own taps (O(S)) cost little against its rows.
constexpr int64_t kRowsPerTask = 32;

// The row pass reads every box column (a contiguous, vectorised loop) up to this many times the
// 2S columns the taps need, and gathers only those 2S (a scalar loop) past it.
constexpr int64_t kContiguousTaps = 4;

// One task of masked_crops: output rows [r0, r1) of the crop of `mask` (H×W bytes) in box `b`.
void crop_rows(const float* image, const uint8_t* mask, int64_t h, int64_t w,
               const int64_t* b, const float* fill, int64_t size, int64_t r0, int64_t r1,
               float* crop) {
    const Taps ys = source_taps(b[3] - b[1], size, b[1]);
    Taps xs = source_taps(b[2] - b[0], size, b[0]);
    // The row pass covers the box's columns while the box is narrow enough (each once, in
    // order), else only the 2S tapped ones (lo taps, then hi taps).
    const bool narrow = b[2] - b[0] <= kContiguousTaps * 2 * size;
    const int64_t n = narrow ? b[2] - b[0] : 2 * size;
    std::vector<int64_t> columns;
    if (narrow) {
        for (int64_t c = 0; c < size; ++c) {
            xs.lo[c] -= b[0];
            xs.hi[c] -= b[0];
        }
    } else {
        columns = xs.lo;
        columns.insert(columns.end(), xs.hi.begin(), xs.hi.end());
    }
    const int64_t plane = h * w;
    std::vector<float> rows(3 * n);
    // Generic over the column map and the column pass, so that each contiguous case is a
    // vectorised loop. A mask tap is read once for the three channels; pixels are loaded before
    // the select (they lie inside the image) for the same reason.
    auto run = [&](auto column, auto column_pass) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t top = ys.lo[r] * w, bottom = ys.hi[r] * w;
            const float wy = ys.weight[r];
            for (int64_t j = 0; j < n; ++j) {
                const int64_t up = top + column(j), down = bottom + column(j);
                const bool in_up = mask[up] != 0, in_down = mask[down] != 0;
                for (int64_t ch = 0; ch < 3; ++ch) {
                    const float a = image[ch * plane + up], z = image[ch * plane + down];
                    rows[ch * n + j] = lerp(in_up ? a : fill[ch], in_down ? z : fill[ch], wy);
                }
            }
            for (int64_t ch = 0; ch < 3; ++ch)
                column_pass(rows.data() + ch * n, crop + (ch * size + r) * size);
        }
    };
    if (narrow) {  // the column taps index the box's columns: a gather
        run([x0 = b[0]](int64_t j) { return x0 + j; }, [&](const float* row, float* line) {
            for (int64_t c = 0; c < size; ++c)
                line[c] = lerp(row[xs.lo[c]], row[xs.hi[c]], xs.weight[c]);
        });
    } else {  // the row pass holds the lo taps, then the hi taps: contiguous
        run([&columns](int64_t j) { return columns[j]; }, [&](const float* row, float* line) {
            for (int64_t c = 0; c < size; ++c)
                line[c] = lerp(row[c], row[size + c], xs.weight[c]);
        });
    }
}

// Normalised 3×H×W float32, K×H×W bool masks, their K×4 tight boxes → K×3×S×S float32, written
// into `out` when given (a caller's reused buffer: no allocation, no page faults per call).
carray<float> masked_crops(const carray<float>& normalised, const carray<bool>& masks,
                           const carray<int64_t>& boxes, const carray<float>& fill, int64_t size,
                           std::optional<carray<float>> out) {
    require(masks.ndim() == 3, "masks must be K×H×W");
    const int64_t k = masks.shape(0), h = masks.shape(1), w = masks.shape(2);
    require(normalised.ndim() == 3 && normalised.shape(0) == 3 && normalised.shape(1) == h &&
                normalised.shape(2) == w,
            "normalised must be 3×H×W with the masks' H×W (" + std::to_string(h) + "×" +
                std::to_string(w) + ")");
    require(boxes.ndim() == 2 && boxes.shape(0) == k && boxes.shape(1) == 4,
            "boxes must be K×4 with the masks' K (" + std::to_string(k) + ")");
    require(fill.ndim() == 1 && fill.shape(0) == 3, "fill must hold 3 values");
    require(size >= 1 && size <= kMaxSide, "size must lie in 1..4096");
    const int64_t* box = boxes.data();
    for (int64_t i = 0; i < k; ++i) {
        const int64_t* b = box + 4 * i;
        require(0 <= b[0] && b[0] < b[2] && b[2] <= w && 0 <= b[1] && b[1] < b[3] && b[3] <= h,
                "box " + std::to_string(i) + " [" + std::to_string(b[0]) + ", " +
                    std::to_string(b[1]) + ", " + std::to_string(b[2]) + ", " +
                    std::to_string(b[3]) + ") is empty or outside the " + std::to_string(w) +
                    "×" + std::to_string(h) + " image");
    }
    if (out) {
        require(out->ndim() == 4 && out->shape(0) == k && out->shape(1) == 3 &&
                    out->shape(2) == size && out->shape(3) == size && out->writeable(),
                "out must be a writeable C-contiguous float32 array of shape (" +
                    std::to_string(k) + ", 3, " + std::to_string(size) + ", " +
                    std::to_string(size) + ")");
    } else {
        out.emplace(std::vector<py::ssize_t>{k, 3, size, size});
    }
    const float* image = normalised.data();
    const uint8_t* src = mask_bytes(masks);
    const float* colour = fill.data();
    float* dst = out->mutable_data();
    const int64_t blocks = (size + kRowsPerTask - 1) / kRowsPerTask;
    {
        py::gil_scoped_release release;
        parallel_for(k * blocks, [&](int64_t task) {
            const int64_t i = task / blocks, r0 = (task % blocks) * kRowsPerTask;
            crop_rows(image, src + i * h * w, h, w, box + 4 * i, colour, size, r0,
                      std::min(size, r0 + kRowsPerTask), dst + i * 3 * size * size);
        });
    }
    return *out;
}

// K×H×W bool → K×g×g float32 in [0, 1]: the masks as 0/1 floats, resized bilinearly.
carray<float> mask_grid(const carray<bool>& masks, int64_t grid) {
    require(masks.ndim() == 3, "masks must be K×H×W");
    require(grid >= 1 && grid <= kMaxSide, "grid must lie in 1..4096");
    const int64_t k = masks.shape(0), h = masks.shape(1), w = masks.shape(2);
    require(k == 0 || (h >= 1 && w >= 1), "masks must not be empty (H, W ≥ 1)");
    carray<float> out({k, grid, grid});
    if (k == 0) return out;
    const Taps ys = source_taps(h, grid, 0), xs = source_taps(w, grid, 0);
    const uint8_t* src = mask_bytes(masks);
    float* dst = out.mutable_data();
    // Four reads per cell: a thread pays for its start (tens of µs) only past ~16k cells.
    const int64_t masks_per_thread = std::max<int64_t>(1, 16384 / (grid * grid));
    {
        py::gil_scoped_release release;
        parallel_for(k, [&](int64_t i) {
            const uint8_t* mask = src + i * h * w;
            float* cell = dst + i * grid * grid;
            for (int64_t r = 0; r < grid; ++r) {
                const uint8_t* top = mask + ys.lo[r] * w;
                const uint8_t* bottom = mask + ys.hi[r] * w;
                const float wy = ys.weight[r];
                for (int64_t c = 0; c < grid; ++c) {
                    const int64_t left = xs.lo[c], right = xs.hi[c];
                    const float a = lerp(top[left] != 0, bottom[left] != 0, wy);
                    const float z = lerp(top[right] != 0, bottom[right] != 0, wy);
                    cell[r * grid + c] = lerp(a, z, xs.weight[c]);
                }
            }
        }, masks_per_thread);
    }
    return out;
}

}  // namespace

void register_crops(py::module_& m) {
    m.def("masked_crops", &masked_crops, py::arg("normalised"), py::arg("masks"),
          py::arg("boxes"), py::arg("fill"), py::arg("size"),
          py::arg("out").noconvert() = py::none(),
          "K masked crops → K×3×size×size float32: outside its mask a pixel reads as fill; the "
          "tight box is resized bilinearly (half-pixel centres, no antialias); into out when "
          "given");
    m.def("mask_grid", &mask_grid, py::arg("masks"), py::arg("grid"),
          "K×H×W bool → K×grid×grid float32: the masks resized bilinearly as 0/1 floats");
}

}  // namespace zsris
