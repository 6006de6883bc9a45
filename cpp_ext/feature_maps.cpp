// The masked feature maps of the ResNet family's global branch (SPEC.md §7), as
// runtime/maskops/feature_maps.py computes them, bit for bit: the layer-4 map L2-normalised over
// channels at each position (squares summed channel after channel in float32, the norm floored at
// 1e-12 as F.normalize does), then multiplied by each mask's grid.
#include <cmath>

#include "maskops.h"

namespace zsris {
namespace {

// C×g×g float32 map, K×g×g float32 grids → K×C×g×g float32.
carray<float> masked_feature_maps(const carray<float>& features, const carray<float>& grids) {
    require(features.ndim() == 3, "features must be C×g×g");
    require(grids.ndim() == 3 && grids.shape(1) == features.shape(1) &&
                grids.shape(2) == features.shape(2),
            "grids must be K×g×g with the feature map's g×g (" +
                std::to_string(features.shape(1)) + "×" + std::to_string(features.shape(2)) + ")");
    const int64_t c = features.shape(0), cells = features.shape(1) * features.shape(2);
    const int64_t k = grids.shape(0);
    require(c * cells <= (int64_t{1} << 31), "feature map larger than 2^31 values");
    carray<float> out({k, c, features.shape(1), features.shape(2)});
    const float* f = features.data();
    const float* g = grids.data();
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        std::vector<float> norm(cells, 0.0f), unit(c * cells);
        for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t p = 0; p < cells; ++p)
                norm[p] += f[ch * cells + p] * f[ch * cells + p];
        for (int64_t p = 0; p < cells; ++p) norm[p] = std::max(std::sqrt(norm[p]), 1e-12f);
        for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t p = 0; p < cells; ++p)
                unit[ch * cells + p] = f[ch * cells + p] / norm[p];
        parallel_for(k, [&](int64_t i) {
            const float* grid = g + i * cells;
            float* map = dst + i * c * cells;
            for (int64_t ch = 0; ch < c; ++ch)
                for (int64_t p = 0; p < cells; ++p)
                    map[ch * cells + p] = unit[ch * cells + p] * grid[p];
        }, 4);
    }
    return out;
}

}  // namespace

void register_feature_maps(py::module_& m) {
    m.def("masked_feature_maps", &masked_feature_maps, py::arg("features"), py::arg("grids"),
          "C×g×g float32 feature map, K×g×g float32 grid masks → K×C×g×g float32: the map "
          "L2-normalised over channels at each position, times each grid");
}

}  // namespace zsris
