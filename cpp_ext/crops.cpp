// masked_crops, mask_grid (not yet ported: the NumPy twins run).
#include "maskops.h"

namespace zsris {

void register_crops(py::module_& m) { (void)m; }

}  // namespace zsris
