# Every mistake a user can make on the command line ends with one clear line.
source "$(dirname "$0")/lib.sh"
dir="$LT_TEST_DIR/cli_errors"
rm -rf "$dir" && mkdir -p "$dir/recipes"
printf 'model:\n  preset: tiny\ntrain:\n  lr: [1\n' > "$dir/recipes/broken.yaml"

expect_error "unknown command 'trian'" "$LONGTRAIN" trian
expect_error "missing RECIPE" "$LONGTRAIN" train
expect_error "nope.yaml: recipe not found" "$LONGTRAIN" train nope.yaml
expect_error "broken.yaml:5:1: invalid YAML" "$LONGTRAIN" train "$dir/recipes/broken.yaml"
expect_error "did you mean 'train.steps'" "$LONGTRAIN" train recipes/tiny-passkey.yaml train.step=3
expect_error "unknown option '--fast'" "$LONGTRAIN" train recipes/tiny-passkey.yaml --fast
expect_error "missing --checkpoint" "$LONGTRAIN" eval recipes/tiny-passkey.yaml
expect_error "checkpoint not found" "$LONGTRAIN" eval recipes/tiny-passkey.yaml --checkpoint "$dir/none"
expect_error "contains no complete checkpoint" "$LONGTRAIN" eval recipes/tiny-passkey.yaml --checkpoint "$dir"
expect_error "no CUDA device is visible" "$LONGTRAIN" train recipes/tiny-passkey.yaml train.device=cuda "run_dir=$dir/cuda"
expect_error "no CUDA device is visible" "$LONGTRAIN" eval recipes/tiny-passkey.yaml --checkpoint "$LT_TEST_DIR/cli_train/checkpoints" train.device=cuda
expect_error "cannot open" "$LONGTRAIN" train recipes/tiny-passkey.yaml data.source=indexed "data.path=$dir/missing" "run_dir=$dir/ix"
"$LONGTRAIN" --help | grep -q "usage: longtrain" || fail "--help"
"$LONGTRAIN" train --help | grep -q "usage: longtrain train" || fail "train --help"
"$LONGTRAIN" eval --help | grep -q "usage: longtrain eval" || fail "eval --help"
echo "user errors ok"
