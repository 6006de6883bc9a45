// Masked crops (runtime/crop_batcher.py) and mask grids (runtime/mask_grid.py), bit for bit.
//
// Both are PyTorch's bilinear kernel (half-pixel centres, no antialias) done separably as the
// twins do it: rows first, then columns, each pass as a * (1 - w) + b * w in float32 (setup.py
// builds with -ffp-contract=off, so no FMA changes the last bit). Only the source rows that the
// taps read are touched, so a crop costs O(S · min(box width, 2S)) whatever the image size.
#include "maskops.h"

namespace zsris {
namespace {

// runtime/resize.py's source_taps: the source indices (lo, hi) and the weight of hi.
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

// One task of masked_crops: output rows [r0, r1) of the crop of `mask` (H×W bytes) in box `b`.
void crop_rows(const float* image, const uint8_t* mask, int64_t h, int64_t w,
               const int64_t* b, const float* fill, int64_t size, int64_t r0, int64_t r1,
               float* crop) {
    const Taps ys = source_taps(b[3] - b[1], size, b[1]);
    Taps xs = source_taps(b[2] - b[0], size, b[0]);
    // The row pass covers the box's columns while the box is at most 2S wide (each once, in
    // order), else only the 2S tapped ones; the column taps then index the row pass's output.
    const bool narrow = b[2] - b[0] <= 2 * size;
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
        for (int64_t c = 0; c < size; ++c) {
            xs.lo[c] = c;
            xs.hi[c] = size + c;
        }
    }
    const int64_t plane = h * w;
    std::vector<float> rows(n);
    // Generic over the column map, so that the narrow case is a contiguous, vectorised loop;
    // pixels are loaded before the select for the same reason (they lie inside the image).
    auto run = [&](auto column) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t top = ys.lo[r] * w, bottom = ys.hi[r] * w;
            const float wy = ys.weight[r];
            for (int64_t ch = 0; ch < 3; ++ch) {
                const float* pixels = image + ch * plane;
                const float f = fill[ch];
                for (int64_t j = 0; j < n; ++j) {
                    const int64_t up = top + column(j), down = bottom + column(j);
                    const float a = pixels[up], z = pixels[down];
                    rows[j] = lerp(mask[up] != 0 ? a : f, mask[down] != 0 ? z : f, wy);
                }
                float* line = crop + (ch * size + r) * size;
                for (int64_t c = 0; c < size; ++c)
                    line[c] = lerp(rows[xs.lo[c]], rows[xs.hi[c]], xs.weight[c]);
            }
        }
    };
    if (narrow) {
        run([x0 = b[0]](int64_t j) { return x0 + j; });
    } else {
        run([&columns](int64_t j) { return columns[j]; });
    }
}

// Normalised 3×H×W float32, K×H×W bool masks, their K×4 tight boxes → K×3×S×S float32.
carray<float> masked_crops(const carray<float>& normalised, const carray<bool>& masks,
                           const carray<int64_t>& boxes, const carray<float>& fill, int64_t size) {
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
    carray<float> out({k, int64_t{3}, size, size});
    const float* image = normalised.data();
    const uint8_t* src = mask_bytes(masks);
    const float* colour = fill.data();
    float* dst = out.mutable_data();
    const int64_t blocks = (size + kRowsPerTask - 1) / kRowsPerTask;
    {
        py::gil_scoped_release release;
        parallel_for(k * blocks, [&](int64_t task) {
            const int64_t i = task / blocks, r0 = (task % blocks) * kRowsPerTask;
            crop_rows(image, src + i * h * w, h, w, box + 4 * i, colour, size, r0,
                      std::min(size, r0 + kRowsPerTask), dst + i * 3 * size * size);
        });
    }
    return out;
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
          "K masked crops → K×3×size×size float32: outside its mask a pixel reads as fill; the "
          "tight box is resized bilinearly (half-pixel centres, no antialias)");
    m.def("mask_grid", &mask_grid, py::arg("masks"), py::arg("grid"),
          "K×H×W bool → K×grid×grid float32: the masks resized bilinearly as 0/1 floats");
}

}  // namespace zsris
