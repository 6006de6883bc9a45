// Tight boxes of K binary masks.
#include "maskops.h"

namespace zsris {
namespace {

// K×H×W bool → K×4 int64 [x0, y0, x1, y1) (x1, y1 exclusive); an empty mask gets zeros.
carray<int64_t> tight_boxes(const carray<bool>& masks) {
    require(masks.ndim() == 3, "masks must be K×H×W");
    const int64_t k = masks.shape(0), h = masks.shape(1), w = masks.shape(2);
    carray<int64_t> out({k, int64_t{4}});
    // Read as bytes: a NumPy bool holding a byte other than 0/1 is "true", never undefined.
    const auto* src = reinterpret_cast<const uint8_t*>(masks.data());
    int64_t* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        parallel_for(k, [&](int64_t i) {
            const uint8_t* m = src + i * h * w;
            int64_t x0 = w, y0 = h, x1 = -1, y1 = -1;
            for (int64_t y = 0; y < h; ++y) {
                const uint8_t* row = m + y * w;
                const uint8_t* first =
                    std::find_if(row, row + w, [](uint8_t v) { return v != 0; });
                if (first == row + w) continue;
                int64_t last = w - 1;
                while (!row[last]) --last;
                x0 = std::min<int64_t>(x0, first - row);
                x1 = std::max(x1, last);
                if (y0 == h) y0 = y;
                y1 = y;
            }
            int64_t* box = dst + i * 4;
            if (x1 < 0) {
                box[0] = box[1] = box[2] = box[3] = 0;
            } else {
                box[0] = x0; box[1] = y0; box[2] = x1 + 1; box[3] = y1 + 1;
            }
        }, 8);
    }
    return out;
}

}  // namespace

void register_boxes(py::module_& m) {
    m.def("tight_boxes", &tight_boxes, py::arg("masks"),
          "K×H×W bool → K×4 int64 tight boxes [x0, y0, x1, y1); empty masks give zeros");
}

}  // namespace zsris
