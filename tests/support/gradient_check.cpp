#include "tests/support/gradient_check.h"

namespace lt::testing {

void expect_gradients_agree(Trainer& parallel, Trainer& serial, const Agreement& agreement) {
  auto reference = serial.model().named_parameters();
  auto& model = parallel.model();
  int64_t checked = 0;
  for (const auto& state : parallel.states())
    for (const auto& s : state->segments()) {
      const auto slice = model.slice_of(s.name);
      const auto mine = reference[s.name].grad().narrow(slice.dim, slice.offset, s.shape[slice.dim]);
      EXPECT_TRUE(gradients_agree(s.grad(), mine.reshape(-1).narrow(0, s.start, s.size()), agreement))
          << s.name << " [" << s.start << ", " << s.end << ")";
      ++checked;
    }
  EXPECT_GT(checked, 0);
}

}  // namespace lt::testing
