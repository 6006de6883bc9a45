#include "maskops.h"

PYBIND11_MODULE(_maskops, m) {
    m.doc() = "zsris-rt mask operations (C++); NumPy twins live in zsris_rt.maskops";
    zsris::register_boxes(m);
    zsris::register_crops(m);
    zsris::register_logits(m);
    zsris::register_iou(m);
    zsris::register_rle(m);
    zsris::register_feature_maps(m);
}
