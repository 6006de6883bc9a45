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
                uint8_t any = 0;  // an OR reduction the compiler vectorises: most rows are empty
                for (int64_t x = 0; x < w; ++x) any |= row[x];
                if (!any) continue;
                // Only a pixel left of x0 or right of x1 can widen the box: scan no further.
                int64_t first = 0, last = w - 1;
                while (first < x0 && !row[first]) ++first;
                while (last > x1 && !row[last]) --last;
                x0 = std::min(x0, first);
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
