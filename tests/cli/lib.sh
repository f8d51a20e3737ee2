# Shared helpers for the command-line tests (sourced).
set -euo pipefail
: "${LONGTRAIN:?path of the longtrain program}"
: "${LT_TEST_DIR:?scratch directory}"
mkdir -p "$LT_TEST_DIR"

# A short, fast version of the demo recipe.
SHORT=(train.steps=4 train.global_batch_tokens=1K train.micro_batch_size=2 data.seq_len=256
       data.passkey.min_doc_len=64 data.passkey.max_doc_len=256 eval.sequences=2 eval.passkey_samples=4
       log.interval=1 train.warmup_steps=1 "data.curriculum=[]")

fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_error FRAGMENT COMMAND...: non-zero exit, exactly one line on stderr
# containing FRAGMENT, no stack dump.
expect_error() {
  local fragment=$1; shift
  local err status=0
  err=$("$@" 2>&1 >/dev/null) || status=$?
  [ "$status" -ne 0 ] || fail "exit 0 for: $*"
  [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "not one line for: $*: $err"
  [[ "$err" == *"$fragment"* ]] || fail "expected '$fragment' for: $*; got: $err"
  [[ "$err" != *"terminate called"* && "$err" != *"Exception raised from"* ]] || fail "stack dump: $err"
  echo "ok: $err"
}
