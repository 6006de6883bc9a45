// Low-resolution mask logits → image-size statistics and masks (runtime/maskops/logits.py),
// without materialising the K×H×W logits.
//
// Image-size logits are rows · L · colsᵀ, associated as in the twin, but each map row has only a
// few nonzero (consecutive) entries, so both products read only those: per block of kLanes
// output rows, the row pass R = rows · L over each map row's taps, then each output pixel from R
// and its column taps, kLanes rows at once (one vector per tap). O(H·l·taps + H·W·taps) per mask
// instead of the twin's dense O(H·l² + H·W·l).
//
// The sums are BLAS's in another order: a value differs from the twin's by rounding, measured
// ≤ 5.3 ulps of its terms' magnitude |rows| · |L| · |cols|ᵀ (within 1e-5 · max(1, |value|) for
// |L| ≤ 64), so a pixel that close to a threshold may fall the other way. A NaN logit stays
// local (the pixels whose taps read it); the twin's dense products spread it (0 · NaN) over the
// whole image.
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <type_traits>

#include "maskops.h"

namespace zsris {
namespace {

// Output rows upsampled together: the column pass is then one kLanes-wide FMA per tap.
constexpr int64_t kLanes = 8;
// The value of the lanes past the last row: above no threshold, so they count nowhere.
constexpr float kNoRow = -std::numeric_limits<float>::infinity();

std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// float32 only, never a silent conversion; a strided float32 view is copied, not misread.
carray<float> float32_array(const py::array& a, const char* name) {
    require(py::isinstance<py::array_t<float>>(a),
            std::string(name) + " must be float32, got " + py::str(a.dtype()).cast<std::string>());
    return carray<float>::ensure(a);
}

// The float32 NumPy compares a float32 array with for a Python float: rounded to nearest, ±inf
// past float32's range (a plain cast would be undefined there).
float as_float32(double v) {
    constexpr double overflow = 0x1.fffffep127 + 0x1p103;  // halfway from FLT_MAX to 2^128
    constexpr float inf = std::numeric_limits<float>::infinity();
    if (std::abs(v) >= overflow) return v > 0 ? inf : -inf;
    return static_cast<float>(v);
}

// One map (n×l) as `taps` consecutive weights per output index: the widest nonzero span of its
// rows, each row's window shifted left where it would pass the end. The extra taps are the map's
// own zeros, so every sum is the same; a fixed count lets the passes unroll it.
struct Taps {
    int64_t taps = 0;
    std::vector<int64_t> start;  // per output index: first source index of its window
    std::vector<float> weight;   // n×taps: map[o, start[o] + t]
};

Taps find_taps(const carray<float>& map) {
    const int64_t n = map.shape(0), l = map.shape(1);
    Taps out;
    out.start.resize(n);
    for (int64_t o = 0; o < n; ++o) {  // [first, last] nonzero (a NaN counts); 0 if none
        const float* row = map.data() + o * l;
        int64_t first = 0, last = l - 1;
        while (first < l && row[first] == 0.0f) ++first;
        while (last > first && row[last] == 0.0f) --last;
        out.start[o] = first < l ? first : 0;
        out.taps = std::max(out.taps, first < l ? last - first + 1 : 0);
    }
    out.weight.resize(n * out.taps);
    for (int64_t o = 0; o < n; ++o) {
        out.start[o] = std::min(out.start[o], l - out.taps);
        const float* window = map.data() + o * l + out.start[o];
        std::copy(window, window + out.taps, out.weight.begin() + o * out.taps);
    }
    return out;
}

// f(std::integral_constant<int64_t, taps>) for the usual counts, so that their loops unroll;
// f(…<0>) reads the count at run time.
template <typename F>
void with_taps(int64_t taps, F f) {
    switch (taps) {
        case 1: f(std::integral_constant<int64_t, 1>{}); break;
        case 2: f(std::integral_constant<int64_t, 2>{}); break;
        case 3: f(std::integral_constant<int64_t, 3>{}); break;
        case 4: f(std::integral_constant<int64_t, 4>{}); break;
        default: f(std::integral_constant<int64_t, 0>{});
    }
}

// Row pass of output rows y = y0 + lane < y0 + n: out[lane · l + j] = R[y, j]
// = Σ_t weight[y, t] · L[start[y] + t, j].
template <int64_t kTaps>
void row_pass(const Taps& rows, const float* logits, int64_t l, int64_t y0, int64_t n,
              float* out) {
    const int64_t taps = kTaps > 0 ? kTaps : rows.taps;
    for (int64_t lane = 0; lane < n; ++lane) {
        const float* weights = rows.weight.data() + (y0 + lane) * taps;
        const float* src = logits + rows.start[y0 + lane] * l;
        float* row = out + lane * l;
        for (int64_t j = 0; j < l; ++j) {
            float acc = 0.0f;
            for (int64_t t = 0; t < taps; ++t) acc += weights[t] * src[t * l + j];
            row[j] = acc;
        }
    }
}

// Column pass of a block: values[x · kLanes + lane] = Σ_t R[lane, start[x] + t] · weight[x, t],
// with R stored transposed (block[j · kLanes + lane]): kLanes sums in vector registers.
template <int64_t kTaps>
void column_pass(const Taps& cols, const float* block, float* values) {
    const int64_t taps = kTaps > 0 ? kTaps : cols.taps;
    const int64_t w = static_cast<int64_t>(cols.start.size());
    for (int64_t x = 0; x < w; ++x) {
        const float* weights = cols.weight.data() + x * taps;
        const float* src = block + cols.start[x] * kLanes;
        float acc[kLanes] = {};
        for (int64_t t = 0; t < taps; ++t) {
            for (int64_t lane = 0; lane < kLanes; ++lane) {
                acc[lane] += weights[t] * src[t * kLanes + lane];
            }
        }
        std::copy(acc, acc + kLanes, values + x * kLanes);
    }
}

// Upsample one mask's l×l logits, kLanes output rows at a time: visit(y0, n, values) gets rows
// [y0, y0 + n) as values[x · kLanes + lane]; lanes from n on belong to no row and hold kNoRow.
template <typename Visit>
void upsample(const float* logits, const Taps& rows, const Taps& cols, int64_t l,
              Visit visit) {
    const int64_t h = static_cast<int64_t>(rows.start.size());
    const int64_t w = static_cast<int64_t>(cols.start.size());
    std::vector<float> lines(kLanes * l, 0.0f), block(l * kLanes), values(w * kLanes);
    for (int64_t y0 = 0; y0 < h; y0 += kLanes) {
        const int64_t n = std::min(kLanes, h - y0);
        with_taps(rows.taps, [&](auto taps) {
            row_pass<taps()>(rows, logits, l, y0, n, lines.data());
        });
        for (int64_t j = 0; j < l; ++j) {
            for (int64_t lane = 0; lane < kLanes; ++lane) {
                block[j * kLanes + lane] = lines[lane * l + j];
            }
        }
        with_taps(cols.taps, [&](auto taps) {
            column_pass<taps()>(cols, block.data(), values.data());
        });
        for (int64_t lane = n; lane < kLanes; ++lane) {
            for (int64_t x = 0; x < w; ++x) values[x * kLanes + lane] = kNoRow;
        }
        visit(y0, n, values.data());
    }
}

// parallel_for for tasks that allocate (scratch rows sized by W and l): the first exception is
// rethrown on the calling thread, a Python MemoryError, instead of terminating the process.
template <typename F>
void parallel_for_may_throw(int64_t n, F f) {
    std::exception_ptr error;
    std::mutex lock;
    parallel_for(n, [&](int64_t i) {
        try {
            f(i);
        } catch (...) {
            const std::lock_guard<std::mutex> guard(lock);
            if (!error) error = std::current_exception();
        }
    });
    if (error) std::rethrow_exception(error);
}

// The logits as K×l×l float32 with maps H×l and W×l; throws on any mismatch.
int64_t check_shapes(const carray<float>& logits, const carray<float>& rows,
                     const carray<float>& cols) {
    require(logits.ndim() == 3 && logits.shape(1) == logits.shape(2),
            "logits must be K×l×l, got shape " + shape_of(logits));
    const int64_t l = logits.shape(1);
    require(rows.ndim() == 2 && rows.shape(1) == l,
            "rows must be H×l with the logits' l = " + std::to_string(l) + ", got shape " +
                shape_of(rows));
    require(cols.ndim() == 2 && cols.shape(1) == l,
            "cols must be W×l with the logits' l = " + std::to_string(l) + ", got shape " +
                shape_of(cols));
    // (per-row counts are int32)
    require(cols.shape(0) <= std::numeric_limits<int32_t>::max(), "W must be below 2^31");
    return l;
}

py::tuple logit_statistics(const py::array& logits_in, const py::array& rows_in,
                           const py::array& cols_in, double threshold, double offset) {
    const carray<float> logits = float32_array(logits_in, "logits");
    const carray<float> rows = float32_array(rows_in, "rows");
    const carray<float> cols = float32_array(cols_in, "cols");
    const int64_t l = check_shapes(logits, rows, cols), k = logits.shape(0);
    // Python computes threshold ± offset in double; NumPy then compares in float32.
    const float at = as_float32(threshold), above = as_float32(threshold + offset),
                below = as_float32(threshold - offset);
    carray<float> stability(k);
    carray<int64_t> boxes({k, int64_t{4}});
    carray<int64_t> area(k);
    const float* src = logits.data();
    float* stability_out = stability.mutable_data();
    int64_t* boxes_out = boxes.mutable_data();
    int64_t* area_out = area.mutable_data();
    const Taps row_taps = find_taps(rows), col_taps = find_taps(cols);
    const int64_t w = cols.shape(0);
    {
        py::gil_scoped_release release;
        parallel_for_may_throw(k, [&](int64_t i) {
            int64_t inner = 0, outer = 0, count = 0;
            int64_t x0 = w, y0 = -1, x1 = -1, y1 = -1;
            const auto visit = [&](int64_t top, int64_t n, const float* values) {
                // Per lane (output row): the three counts; lanes past the last row count none.
                int32_t in[kLanes] = {}, out[kLanes] = {}, on[kLanes] = {};
                for (int64_t x = 0; x < w; ++x) {
                    const float* v = values + x * kLanes;
                    for (int64_t lane = 0; lane < kLanes; ++lane) {
                        in[lane] += v[lane] > above;
                        out[lane] += v[lane] > below;
                        on[lane] += v[lane] > at;
                    }
                }
                bool any = false;
                for (int64_t lane = 0; lane < n; ++lane) {
                    inner += in[lane];
                    outer += out[lane];
                    count += on[lane];
                    if (on[lane] == 0) continue;
                    any = true;
                    if (y0 < 0) y0 = top + lane;
                    y1 = top + lane;
                }
                // The box's x extent: only columns outside the extent so far need a look.
                const auto inside = [&](int64_t x) {
                    const float* v = values + x * kLanes;
                    return std::any_of(v, v + kLanes, [&](float u) { return u > at; });
                };
                if (!any) return;
                for (int64_t x = 0; x < x0; ++x) {
                    if (inside(x)) { x0 = x; break; }
                }
                for (int64_t x = w - 1; x > x1; --x) {
                    if (inside(x)) { x1 = x; break; }
                }
            };
            upsample(src + i * l * l, row_taps, col_taps, l, visit);
            // As the twin: float32 counts, float32 division (0 / 0 → NaN).
            stability_out[i] = static_cast<float>(inner) / static_cast<float>(outer);
            area_out[i] = count;
            int64_t* box = boxes_out + i * 4;
            if (count == 0) {
                box[0] = box[1] = box[2] = box[3] = 0;
            } else {
                box[0] = x0; box[1] = y0; box[2] = x1; box[3] = y1;
            }
        });
    }
    return py::make_tuple(stability, boxes, area);
}

carray<bool> logit_masks(const py::array& logits_in, const py::array& rows_in,
                         const py::array& cols_in, double threshold) {
    const carray<float> logits = float32_array(logits_in, "logits");
    const carray<float> rows = float32_array(rows_in, "rows");
    const carray<float> cols = float32_array(cols_in, "cols");
    const int64_t l = check_shapes(logits, rows, cols), k = logits.shape(0);
    const int64_t h = rows.shape(0), w = cols.shape(0);
    const float at = as_float32(threshold);
    carray<bool> masks({k, h, w});
    const float* src = logits.data();
    bool* dst = masks.mutable_data();
    const Taps row_taps = find_taps(rows), col_taps = find_taps(cols);
    {
        py::gil_scoped_release release;
        parallel_for_may_throw(k, [&](int64_t i) {
            bool* mask = dst + i * h * w;
            const auto visit = [&](int64_t top, int64_t n, const float* values) {
                for (int64_t lane = 0; lane < n; ++lane) {
                    bool* out = mask + (top + lane) * w;
                    for (int64_t x = 0; x < w; ++x) out[x] = values[x * kLanes + lane] > at;
                }
            };
            upsample(src + i * l * l, row_taps, col_taps, l, visit);
        });
    }
    return masks;
}

}  // namespace

void register_logits(py::module_& m) {
    m.def("logit_statistics", &logit_statistics, py::arg("logits"), py::arg("rows"),
          py::arg("cols"), py::arg("threshold"), py::arg("offset"),
          "K×l×l float32 logits, maps rows H×l and cols W×l (image logits = rows · L · colsᵀ) → "
          "(stability K float32, inclusive boxes K×4 int64, area K int64) of the image-size "
          "masks logits > threshold");
    m.def("logit_masks", &logit_masks, py::arg("logits"), py::arg("rows"), py::arg("cols"),
          py::arg("threshold"),
          "K×l×l float32 logits, maps rows H×l and cols W×l → K×H×W bool: image-size "
          "logits > threshold");
}

}  // namespace zsris
