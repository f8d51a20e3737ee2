# The program runs unchanged under mpirun -np 1.
source "$(dirname "$0")/lib.sh"
run="$LT_TEST_DIR/cli_mpirun"
rm -rf "$run"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun --oversubscribe -np 1 "$LONGTRAIN" train recipes/tiny-passkey.yaml "${SHORT[@]}" run_dir="$run" > "$run.out"
grep -q "step 4/4 | seq 256 | loss" "$run.out" || fail "no training under mpirun: $(cat "$run.out")"
status=0
mpirun --oversubscribe -np 1 "$LONGTRAIN" train recipes/tiny-passkey.yaml train.lr=fast 2> "$run.err" || status=$?
[ "$status" -ne 0 ] || fail "mpirun hid the error exit"
grep -q "train.lr: expected a finite number" "$run.err" || fail "error lost under mpirun: $(cat "$run.err")"
echo "mpirun ok"
