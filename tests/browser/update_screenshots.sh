#!/usr/bin/env bash
# Refresh docs/screenshots/ (the pictures of docs/operations.md) from the browser tests.
#
#   tests/browser/update_screenshots.sh [FOLDER]
#
# Without FOLDER, runs tests/browser with DICOM_AI_NODE_SCREENSHOTS set to a new temporary
# folder; with FOLDER, takes the screenshots a run already left there. Copies every
# <screen>.png of that folder (not failed/) into docs/screenshots/, and fails when one of
# the screens docs/operations.md shows is missing or a file is over 200 KB.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
python="${VENV:-.venv}/bin/python"
target="docs/screenshots"
screens="login status studies timeline preview failures destinations rules associations audit"
max_bytes=$((200 * 1024))

if [ $# -ge 1 ]; then
    folder="$1"
else
    folder="$(mktemp -d)"
    DICOM_AI_NODE_SCREENSHOTS="$folder" "$python" -m pytest tests/browser -q -p no:cacheprovider
fi

for screen in $screens; do
    [ -f "$folder/$screen.png" ] || { echo "update_screenshots: $folder/$screen.png missing" >&2; exit 1; }
done
mkdir -p "$target"
for path in "$folder"/*.png; do
    size="$(stat -c %s "$path")"
    if [ "$size" -gt "$max_bytes" ]; then
        echo "update_screenshots: $path is $size bytes (over $max_bytes)" >&2
        exit 1
    fi
    cp "$path" "$target/"
    printf '%-28s %7d bytes\n' "$(basename "$path")" "$size"
done
echo "copied into $target/"
