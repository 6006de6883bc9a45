// COCO run-length encoding (runtime/maskops/rle.py): masks ↔ compressed counts strings, byte for byte
// what pycocotools writes.
//
// Layout: runs over the pixels in column-major order (down each column, left to right),
// alternating 0s and 1s and starting with 0s (a first run of 0 when the first pixel is set).
// Compressed: from the third run on, each run is stored as its difference to the run two before;
// each value is written 5 bits at a time, low bits first, as characters 48 + (bits | 0x20 while
// more follow), the last group's bit 0x10 carrying the sign.
#include <string>

#include <pybind11/stl.h>

#include "maskops.h"

namespace zsris {
namespace {

// Largest side an RLE may claim: larger ones are not images but corrupt or hostile input.
constexpr int64_t kMaxRleSide = int64_t{1} << 16;

void append_value(std::string& out, int64_t x) {
    bool more = true;
    while (more) {
        int64_t c = x & 0x1f;
        x >>= 5;  // arithmetic: a negative value ends at -1
        more = (c & 0x10) ? x != -1 : x != 0;
        if (more) c |= 0x20;
        out.push_back(static_cast<char>(c + 48));
    }
}

std::string encode_one(const uint8_t* m, int64_t h, int64_t w) {
    std::string out;
    std::vector<int64_t> runs;
    uint8_t value = 0;
    int64_t run = 0;
    for (int64_t x = 0; x < w; ++x) {
        for (int64_t y = 0; y < h; ++y) {
            const uint8_t pixel = m[y * w + x] != 0;
            if (pixel != value) {
                runs.push_back(run);
                run = 0;
                value = pixel;
            }
            ++run;
        }
    }
    runs.push_back(run);
    for (size_t i = 0; i < runs.size(); ++i)
        append_value(out, i > 2 ? runs[i] - runs[i - 2] : runs[i]);
    return out;
}

// K×H×W bool → K compressed counts strings (as bytes).
py::list rle_encode(const carray<bool>& masks) {
    require(masks.ndim() == 3, "masks must be K×H×W");
    const int64_t k = masks.shape(0), h = masks.shape(1), w = masks.shape(2);
    require(k == 0 || (h >= 1 && w >= 1), "masks must not be empty (H, W ≥ 1)");
    const auto* src = reinterpret_cast<const uint8_t*>(masks.data());
    std::vector<std::string> counts(k);
    {
        py::gil_scoped_release release;
        parallel_for(k, [&](int64_t i) { counts[i] = encode_one(src + i * h * w, h, w); });
    }
    py::list out;
    for (const auto& c : counts) out.append(py::bytes(c));
    return out;
}

// One counts string → runs, each at most `pixels`; an error message (empty when fine) says what
// is wrong.
std::string decode_runs(const std::string& s, int64_t pixels, std::vector<int64_t>& runs) {
    constexpr int kMaxGroups = 12;  // 60 bits: more would shift past int64
    size_t p = 0;
    while (p < s.size()) {
        int64_t x = 0;
        int groups = 0;
        bool more = true;
        while (more) {
            if (p >= s.size()) return "the counts string ends inside a value";
            const int c = static_cast<unsigned char>(s[p]) - 48;
            if (c < 0 || c > 63)
                return "the counts string holds a character outside '0'..'o' at byte " +
                       std::to_string(p);
            if (groups == kMaxGroups)
                return "the counts string holds a value too long at byte " + std::to_string(p);
            x |= static_cast<int64_t>(c & 0x1f) << (5 * groups);
            more = (c & 0x20) != 0;
            ++p;
            ++groups;
            if (!more && (c & 0x10)) x |= static_cast<int64_t>(~uint64_t{0} << (5 * groups));
        }
        const size_t m = runs.size();
        if (m > 2) x += runs[m - 2];  // both within ±2^60: no overflow
        if (x < 0 || x > pixels) return "a run of " + std::to_string(x) + " pixels";
        runs.push_back(x);
    }
    return "";
}

// K compressed counts strings, each of an H×W mask → K×H×W bool; counts must cover H·W exactly.
carray<bool> rle_decode(const std::vector<std::string>& counts, int64_t h, int64_t w) {
    require(h >= 1 && w >= 1 && h <= kMaxRleSide && w <= kMaxRleSide,
            "size must be [height, width] with each in 1.." + std::to_string(kMaxRleSide));
    const int64_t k = static_cast<int64_t>(counts.size()), pixels = h * w;
    std::vector<std::vector<int64_t>> runs(k);
    std::vector<std::string> errors(k);
    {
        py::gil_scoped_release release;
        parallel_for(k, [&](int64_t i) {
            errors[i] = decode_runs(counts[i], pixels, runs[i]);
            if (!errors[i].empty()) return;
            int64_t total = 0;
            for (int64_t r : runs[i]) {  // each run ≤ pixels ≤ 2^32: stopping past it, no overflow
                total += r;
                if (total > pixels) break;
            }
            if (total != pixels)
                errors[i] = "counts cover " + (total > pixels ? "more than " : std::string()) +
                            std::to_string(total > pixels ? pixels : total) + " pixels, not " +
                            std::to_string(h) + "×" + std::to_string(w);
        });
    }
    for (int64_t i = 0; i < k; ++i)
        require(errors[i].empty(), "RLE " + std::to_string(i) + ": " + errors[i]);
    carray<bool> out({k, h, w});
    auto* dst = reinterpret_cast<uint8_t*>(out.mutable_data());
    {
        py::gil_scoped_release release;
        parallel_for(k, [&](int64_t i) {
            uint8_t* m = dst + i * pixels;
            int64_t y = 0, x = 0;  // walking down each column, left to right
            uint8_t value = 0;
            for (int64_t r : runs[i]) {
                for (int64_t n = 0; n < r; ++n) {
                    m[y * w + x] = value;
                    if (++y == h) {
                        y = 0;
                        ++x;
                    }
                }
                value ^= 1;
            }
        });
    }
    return out;
}

}  // namespace

void register_rle(py::module_& m) {
    m.def("rle_encode", &rle_encode, py::arg("masks"),
          "K×H×W bool → K COCO compressed RLE counts strings (bytes), as pycocotools writes them");
    m.def("rle_decode", &rle_decode, py::arg("counts"), py::arg("height"), py::arg("width"),
          "K COCO compressed RLE counts strings of H×W masks → K×H×W bool; each must cover H·W "
          "pixels exactly");
}

}  // namespace zsris
