// Mask IoU matrix and mask NMS (runtime/maskops/iou.py), exactly: integer pixel counts, one
// float64 division per pair, so the twins agree to the bit.
//
// Each mask is packed once into bits (64 pixels per word, rows padded to whole words) with the
// rows and words its pixels occupy; a pair then costs one popcount per word of the overlap of
// those two ranges, and nothing when the ranges do not meet.
#include <cmath>
#include <cstring>
#include <optional>

#include <pybind11/stl.h>

#include "maskops.h"

// A hardware popcount where the CPU has one, chosen at load time (x86-64's baseline lacks it).
#define ZSRIS_POPCOUNT_CLONES ZSRIS_TARGET_CLONES("popcnt", "default")

namespace zsris {
namespace {

struct Packed {
    int64_t words = 0;  // per row
    std::vector<uint64_t> bits;  // K × H × words
    // Per mask: rows [y0, y1) and words [w0, w1) holding its pixels, and its pixel count.
    std::vector<int64_t> y0, y1, w0, w1, area;

    const uint64_t* mask(int64_t i, int64_t h) const { return bits.data() + i * h * words; }
};

#if defined(__BYTE_ORDER__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gather_bits reads bytes little-endian");
#endif

// Eight mask bytes → eight bits, byte j to bit j; any nonzero byte is a set pixel.
inline uint64_t gather_bits(const uint8_t* bytes) {
    uint64_t v;
    std::memcpy(&v, bytes, 8);
    v |= v >> 4;
    v |= v >> 2;
    v |= v >> 1;
    return ((v & 0x0101010101010101ULL) * 0x0102040810204080ULL) >> 56;
}

ZSRIS_POPCOUNT_CLONES
int64_t popcount_words(const uint64_t* a, int64_t n) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) count += __builtin_popcountll(a[i]);
    return count;
}

ZSRIS_POPCOUNT_CLONES
int64_t intersection(const uint64_t* a, const uint64_t* b, int64_t words, int64_t y0, int64_t y1,
                     int64_t w0, int64_t w1) {
    int64_t count = 0;
    for (int64_t y = y0; y < y1; ++y) {
        const uint64_t* ra = a + y * words;
        const uint64_t* rb = b + y * words;
        for (int64_t x = w0; x < w1; ++x) count += __builtin_popcountll(ra[x] & rb[x]);
    }
    return count;
}

// Pack K×H×W mask bytes; `order` (optional) picks and orders the masks.
Packed pack(const uint8_t* src, int64_t k, int64_t h, int64_t w, const int64_t* order) {
    Packed p;
    p.words = (w + 63) / 64;
    p.bits.assign(static_cast<size_t>(k * h * p.words), 0);
    for (auto* v : {&p.y0, &p.y1, &p.w0, &p.w1, &p.area}) v->assign(k, 0);
    const int64_t whole = w / 8;  // bytes handled eight at a time; the rest one by one
    parallel_for(k, [&](int64_t i) {
        const uint8_t* m = src + (order ? order[i] : i) * h * w;
        uint64_t* out = p.bits.data() + i * h * p.words;
        int64_t y0 = h, y1 = 0, w0 = p.words, w1 = 0, area = 0;
        for (int64_t y = 0; y < h; ++y) {
            const uint8_t* row = m + y * w;
            uint64_t* bits = out + y * p.words;
            for (int64_t b = 0; b < whole; ++b)
                bits[b / 8] |= gather_bits(row + 8 * b) << (8 * (b % 8));
            for (int64_t x = 8 * whole; x < w; ++x)
                bits[x / 64] |= static_cast<uint64_t>(row[x] != 0) << (x % 64);
            int64_t first = 0, last = p.words - 1;
            while (first < p.words && !bits[first]) ++first;
            if (first == p.words) continue;
            while (!bits[last]) --last;
            y0 = std::min(y0, y);
            y1 = y + 1;
            w0 = std::min(w0, first);
            w1 = std::max(w1, last + 1);
            area += popcount_words(bits + first, last + 1 - first);
        }
        if (area == 0) y0 = y1 = w0 = w1 = 0;
        p.y0[i] = y0; p.y1[i] = y1; p.w0[i] = w0; p.w1[i] = w1; p.area[i] = area;
    }, 4);
    return p;
}

// IoU of mask i of `a` and mask j of `b` (packed at the same H×W); 0 when both are empty.
double pair_iou(const Packed& a, int64_t i, const Packed& b, int64_t j, int64_t h) {
    const int64_t y0 = std::max(a.y0[i], b.y0[j]), y1 = std::min(a.y1[i], b.y1[j]);
    const int64_t w0 = std::max(a.w0[i], b.w0[j]), w1 = std::min(a.w1[i], b.w1[j]);
    const int64_t inter = (y0 < y1 && w0 < w1)
        ? intersection(a.mask(i, h), b.mask(j, h), a.words, y0, y1, w0, w1) : 0;
    const int64_t uni = a.area[i] + b.area[j] - inter;
    return uni > 0 ? static_cast<double>(inter) / static_cast<double>(uni) : 0.0;
}

const uint8_t* bytes_of(const carray<bool>& masks) {
    return reinterpret_cast<const uint8_t*>(masks.data());
}

// K×H×W and M×H×W bool → K×M float64 IoU; without `b`, the K×K matrix of `a` with itself.
carray<double> mask_iou(const carray<bool>& a, const std::optional<carray<bool>>& b) {
    require(a.ndim() == 3, "masks must be K×H×W");
    const int64_t k = a.shape(0), h = a.shape(1), w = a.shape(2);
    const bool self = !b.has_value();
    if (!self) {
        require(b->ndim() == 3 && b->shape(1) == h && b->shape(2) == w,
                "both mask sets must be ·×H×W with the same H×W (" + std::to_string(h) + "×" +
                    std::to_string(w) + ")");
    }
    const int64_t m = self ? k : b->shape(0);
    carray<double> out({k, m});
    double* dst = out.mutable_data();
    if (k == 0 || m == 0) return out;
    const uint8_t* src_a = bytes_of(a);
    const uint8_t* src_b = self ? nullptr : bytes_of(*b);
    {
        py::gil_scoped_release release;
        const Packed pa = pack(src_a, k, h, w, nullptr);
        const Packed pb = self ? Packed{} : pack(src_b, m, h, w, nullptr);
        const Packed& other = self ? pa : pb;
        parallel_for(k, [&](int64_t i) {
            for (int64_t j = self ? i : 0; j < m; ++j)
                dst[i * m + j] = pair_iou(pa, i, other, j, h);
        });
        if (self) {
            for (int64_t i = 0; i < k; ++i)
                for (int64_t j = 0; j < i; ++j) dst[i * m + j] = dst[j * m + i];
        }
    }
    return out;
}

// Greedy NMS: best score first (ties: lower index first), a mask goes when its IoU with a kept
// one exceeds `threshold`. Returns the kept indices, best first.
carray<int64_t> mask_nms(const carray<bool>& masks, const carray<double>& scores,
                         double threshold) {
    require(masks.ndim() == 3, "masks must be K×H×W");
    const int64_t k = masks.shape(0), h = masks.shape(1), w = masks.shape(2);
    require(scores.ndim() == 1 && scores.shape(0) == k,
            "scores must hold one value per mask (" + std::to_string(k) + ")");
    require(!std::isnan(threshold), "threshold must be a number");
    const double* score = scores.data();
    for (int64_t i = 0; i < k; ++i) require(!std::isnan(score[i]), "scores must not be NaN");
    std::vector<int64_t> order(k), kept;
    {
        py::gil_scoped_release release;
        for (int64_t i = 0; i < k; ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(),
                         [score](int64_t x, int64_t y) { return score[x] > score[y]; });
        const Packed p = pack(bytes_of(masks), k, h, w, order.data());
        // suppressed[j]: some kept i < j (in score order) overlaps it too much. Rows of kept
        // masks only, each over the masks after it, in parallel.
        std::vector<uint8_t> suppressed(k, 0);
        for (int64_t i = 0; i < k; ++i) {
            if (suppressed[i]) continue;
            kept.push_back(order[i]);
            const int64_t rest = k - i - 1;
            parallel_for(rest, [&](int64_t r) {
                const int64_t j = i + 1 + r;
                if (!suppressed[j] && pair_iou(p, i, p, j, h) > threshold) suppressed[j] = 1;
            }, 256);
        }
    }
    carray<int64_t> out(static_cast<py::ssize_t>(kept.size()));
    std::copy(kept.begin(), kept.end(), out.mutable_data());
    return out;
}

}  // namespace

void register_iou(py::module_& m) {
    m.def("mask_iou", &mask_iou, py::arg("a"), py::arg("b") = py::none(),
          "K×H×W and M×H×W bool → K×M float64 IoU (0 where both masks are empty); without b, "
          "the K×K matrix of a");
    m.def("mask_nms", &mask_nms, py::arg("masks"), py::arg("scores"), py::arg("threshold"),
          "greedy mask NMS: indices kept, best score first (ties: lower index); a mask goes when "
          "its IoU with a kept one exceeds threshold");
}

}  // namespace zsris
