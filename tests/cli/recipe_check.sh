# Every shipped recipe, scaled down (`longtrain check --tiny`: its layout
# kinds at degree 2 on 4 ranks, its ZeRO level and memory settings, tiny
# dimensions), against one rank: the loss and every gradient for 2 steps.
# A recipe added to recipes/ is covered without a new test. Then `check`
# against a deliberately broken layout (LT_FAULT=dropgrad: one rank's first
# gradient bucket reduced as zeros) must say so and exit 1.
source "$(dirname "$0")/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun --oversubscribe --bind-to none)
dir="$LT_TEST_DIR/recipe_check"
rm -rf "$dir"
mkdir -p "$dir"

checked=0
for recipe in recipes/*.yaml; do
  name=$(basename "$recipe" .yaml)
  # A recipe starting from a download takes its model keys from the preset
  # its comments name for `plan` (the tiny one if none): --tiny keeps only
  # the family's features (biases, ties, RoPE scaling, experts) anyway.
  model=()
  if grep -q "^ *from_hf: [^ #']" "$recipe"; then
    preset=$(grep -o "model.preset=[a-z0-9.-]*" "$recipe" | head -1 || true)
    model=(init.from_hf= "${preset:-model.preset=tiny}")
  fi
  status=0
  "${MPIRUN[@]}" -np 4 "$LONGTRAIN" check "$recipe" --tiny --steps 2 run_dir="$dir/$name" "${model[@]}" \
    > "$dir/$name.out" 2>&1 || status=$?
  [ "$status" -eq 0 ] && grep -q "^check passed" "$dir/$name.out" ||
    fail "$recipe: exit $status: $(cat "$dir/$name.out")"
  echo "ok: $recipe: $(grep -c '^step ' "$dir/$name.out") steps against one rank; $(grep '^check: .* ranks' "$dir/$name.out")"
  checked=$((checked + 1))
done
[ "$checked" -ge 10 ] || fail "only $checked recipes checked"

# A broken layout: the check names it and the job exits 1.
status=0
LT_FAULT=dropgrad@1:1 "${MPIRUN[@]}" -x LT_FAULT -np 2 "$LONGTRAIN" check recipes/tiny-passkey.yaml --tiny --steps 2 \
  run_dir="$dir/broken" > "$dir/broken.out" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "a broken layout: exit $status, not 1: $(cat "$dir/broken.out")"
grep -q "^check FAILED" "$dir/broken.out" || fail "no verdict for a broken layout: $(cat "$dir/broken.out")"
grep -q "beyond tolerance" "$dir/broken.out" || fail "no step named: $(cat "$dir/broken.out")"
echo "ok: a broken layout: $(grep '^check FAILED' "$dir/broken.out")"
# What the check cannot replay, and bad flags: one line, before anything runs.
expect_error "data.packing: adaptive plans each step's groups from measured costs" \
  "${MPIRUN[@]}" -q -np 2 "$LONGTRAIN" check recipes/tiny-adaptive-sp.yaml
expect_error "check: --steps '0' must be a positive integer" "$LONGTRAIN" check recipes/tiny-passkey.yaml --steps 0
echo "recipe_check: $checked recipes passed"
