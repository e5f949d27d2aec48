#!/usr/bin/env bash
# Opens a report (REPORT_DIR/index.html, as written by `a2cid report`) in headless Chromium and
# checks that every image on the page loaded and has a size.
#
#   scripts/check-report-in-browser.sh REPORT_DIR
#
# The page is copied to a temporary folder with a small script appended that, once the page has
# loaded, writes each image's state and natural size into the page; the DOM is dumped and read
# back. Prints one line per image; exits 0 when every image loaded, 1 naming those that did not,
# 2 when the check could not run (no page, no browser, no result). CHROMIUM overrides the browser
# (default /usr/bin/chromium).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 REPORT_DIR" >&2
    exit 2
fi
dir=$1
browser=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -f $dir/index.html ]]; then
    echo "no page: $dir/index.html does not exist" >&2
    exit 2
fi
if [[ ! -x $browser ]]; then
    echo "no browser: $browser is not installed (Debian package chromium)" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/page"
cp -R "$dir"/. "$work/page/"
probe=$work/page/image-check.html
cat "$dir/index.html" - >"$probe" <<'EOF'
<script>
window.addEventListener("load", function () {
  var lines = [];
  var images = document.images;
  for (var i = 0; i < images.length; i++) {
    var im = images[i];
    var ok = im.complete && im.naturalWidth > 0 && im.naturalHeight > 0;
    lines.push((ok ? "loaded " : "FAILED ") + im.getAttribute("src") + " " +
               im.naturalWidth + "x" + im.naturalHeight);
  }
  var out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = "\nimages-total " + images.length + "\n" + lines.join("\n") + "\nend-of-check\n";
  document.body.appendChild(out);
});
</script>
EOF

dom=$work/dom.html
if ! timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --virtual-time-budget=15000 --dump-dom \
    "file://$probe" >"$dom" 2>"$work/browser.log"; then
    echo "the browser failed:" >&2
    tail -n 20 "$work/browser.log" >&2
    exit 2
fi

# The check's lines (each on a line of its own in the dumped page).
total=$(sed -n 's/^images-total \([0-9]*\)$/\1/p' "$dom")
if [[ -z $total ]] || ! grep -q '^end-of-check$' "$dom"; then
    echo "the page's check did not run (no result in the dumped page)" >&2
    tail -n 20 "$work/browser.log" >&2
    exit 2
fi
expected=$(grep -o '<img ' "$dir/index.html" | wc -l)
body=$(grep -E '^(loaded|FAILED) ' "$dom" || true)
echo "$body"
failed=$(grep -c '^FAILED ' <<<"$body" || true)
if [[ $total -eq 0 ]]; then
    echo "the page has no images" >&2
    exit 1
fi
if [[ $total -ne $expected ]]; then
    echo "the browser saw $total images, the page has $expected <img> tags" >&2
    exit 1
fi
if [[ $failed -gt 0 ]]; then
    echo "$failed of $total images failed to load:" >&2
    grep '^FAILED ' <<<"$body" | awk '{print "  " $2}' >&2
    exit 1
fi
echo "all $total images loaded ($dir/index.html)"
