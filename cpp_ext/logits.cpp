// logit_statistics, logit_masks (not yet ported: the NumPy twins run).
#include "maskops.h"

namespace zsris {

void register_logits(py::module_& m) { (void)m; }

}  // namespace zsris
