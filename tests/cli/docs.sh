# The documentation against the code: docs/recipe_keys.md lists every key the
# program reads (generated from the config's field list), README.md fits on a
# screen (12 KB), and every relative link of README.md and docs/ resolves.
source "$(dirname "$0")/lib.sh"

python3 scripts/recipe_keys.py --check "$LONGTRAIN" || fail "docs/recipe_keys.md"

size=$(wc -c < README.md)
[ "$size" -le 12288 ] || fail "README.md is $size bytes; keep it within 12 KB and move detail to docs/"

broken=0
for page in README.md docs/*.md; do
  dir=$(dirname "$page")
  # [text](target) with a relative target (not http, not an anchor alone); the anchor part dropped.
  while read -r target; do
    [ -e "$dir/${target%%#*}" ] || { echo "$page: broken link to $target" >&2; broken=1; }
  done < <(grep -o '\](\([^)#:]*\)\(#[^)]*\)\?)' "$page" | sed 's/^](\(.*\))$/\1/' | grep -v '^#' || true)
done
[ "$broken" -eq 0 ] || fail "broken links"
echo "docs ok: every recipe key listed, README.md $size bytes, links resolve"
