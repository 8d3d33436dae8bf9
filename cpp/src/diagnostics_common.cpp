#include "diagnostics_common.hpp"

namespace grpokit {
namespace diag {

std::vector<double> read_advantages(const TensorView& advantages, int64_t B) {
  check_ndim(advantages, "advantages", {1});
  check_dtype(advantages, "advantages", kFloatTypes);
  check_cpu(advantages, "advantages");
  if (advantages.shape[0] != B)
    value_error("advantages: expected one advantage per completion (", B, ",), got (", advantages.shape[0],
                ",)");
  std::vector<double> a(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) {
    a[i] = load_float(advantages, i * advantages.strides[0]);
    if (!std::isfinite(a[i]))
      value_error("advantages: element ", i, " is ", a[i], "; advantages must be finite");
  }
  return a;
}

bool check_mask(const TensorView& mask, const TensorView& ref, const char* ref_name) {
  if (!mask.defined()) return false;
  check_dtype(mask, "mask", math::kFlagDTypes);
  check_shape_equal(mask, "mask", ref, ref_name);
  check_cpu(mask, "mask");
  return true;
}

int64_t check_groups(int64_t B, int64_t group_size) {
  if (group_size <= 0) value_error("group_size: expected a positive integer, got ", group_size);
  if (B % group_size != 0)
    value_error("group_size: the batch of ", B, " completions is not a whole number of groups of ",
                group_size);
  return B / group_size;
}

void check_output(const TensorView& out, const char* name, const TensorView& ref, const char* ref_name,
                  DType dtype) {
  if (!out.defined()) value_error(name, ": an output array is required");
  check_dtype(out, name, {dtype});
  check_shape_equal(out, name, ref, ref_name);
  check_cpu(out, name);
  check_writable(out, name);
}

}  // namespace diag
}  // namespace grpokit
