// Tight boxes of K binary masks.
#include "maskops.h"

namespace zsris {
namespace {

// Rows per task: a mask is split across the cores even when K is small.
constexpr int64_t kRowsPerTask = 64;

struct Box {
    int64_t x0, y0, x1, y1;  // inclusive; x1 < 0 while empty
};

// ORs a row into the columns seen so far and says whether the row has a pixel: one vectorised
// pass over every byte (AVX2 where the CPU has it), as NumPy's any() over each axis does.
ZSRIS_TARGET_CLONES("avx2", "default")
uint8_t accumulate_row(const uint8_t* __restrict row, uint8_t* __restrict columns, int64_t w) {
    uint8_t any = 0;
    for (int64_t x = 0; x < w; ++x) {
        columns[x] |= row[x];
        any |= row[x];
    }
    return any;
}

// The box of rows [r0, r1) of one H×W mask; `columns` is W bytes of scratch.
Box rows_box(const uint8_t* m, int64_t w, int64_t r0, int64_t r1, uint8_t* columns) {
    Box box{w, -1, -1, -1};
    std::fill(columns, columns + w, uint8_t{0});
    for (int64_t y = r0; y < r1; ++y) {
        if (!accumulate_row(m + y * w, columns, w)) continue;
        if (box.y0 < 0) box.y0 = y;
        box.y1 = y;
    }
    if (box.y0 < 0) return box;
    int64_t first = 0, last = w - 1;
    while (!columns[first]) ++first;
    while (!columns[last]) --last;
    box.x0 = first;
    box.x1 = last;
    return box;
}

// K×H×W bool → K×4 int64 [x0, y0, x1, y1) (x1, y1 exclusive); an empty mask gets zeros.
carray<int64_t> tight_boxes(const carray<bool>& masks) {
    require(masks.ndim() == 3, "masks must be K×H×W");
    const int64_t k = masks.shape(0), h = masks.shape(1), w = masks.shape(2);
    carray<int64_t> out({k, int64_t{4}});
    // Read as bytes: a NumPy bool holding a byte other than 0/1 is "true", never undefined.
    const auto* src = reinterpret_cast<const uint8_t*>(masks.data());
    int64_t* dst = out.mutable_data();
    const int64_t blocks = std::max<int64_t>(1, (h + kRowsPerTask - 1) / kRowsPerTask);
    {
        py::gil_scoped_release release;
        std::vector<Box> parts(k * blocks);
        // Column scratch per task, allocated here: 1/64 of the masks' bytes, and no allocation
        // (which could throw) inside a thread.
        std::vector<uint8_t> columns(k * blocks * w);
        parallel_for(k * blocks, [&](int64_t task) {
            const int64_t i = task / blocks, r0 = (task % blocks) * kRowsPerTask;
            parts[task] = rows_box(src + i * h * w, w, r0, std::min(h, r0 + kRowsPerTask),
                                   columns.data() + task * w);
        }, 4);
        for (int64_t i = 0; i < k; ++i) {
            Box box{w, -1, -1, -1};
            for (int64_t b = 0; b < blocks; ++b) {  // top to bottom: y0 from the first found
                const Box& part = parts[i * blocks + b];
                if (part.x1 < 0) continue;
                box.x0 = std::min(box.x0, part.x0);
                box.x1 = std::max(box.x1, part.x1);
                if (box.y0 < 0) box.y0 = part.y0;
                box.y1 = part.y1;
            }
            int64_t* row = dst + i * 4;
            if (box.x1 < 0) {
                row[0] = row[1] = row[2] = row[3] = 0;
            } else {
                row[0] = box.x0; row[1] = box.y0; row[2] = box.x1 + 1; row[3] = box.y1 + 1;
            }
        }
    }
    return out;
}

}  // namespace

void register_boxes(py::module_& m) {
    m.def("tight_boxes", &tight_boxes, py::arg("masks"),
          "K×H×W bool → K×4 int64 tight boxes [x0, y0, x1, y1); empty masks give zeros");
}

}  // namespace zsris
