#!/usr/bin/env bash
# The shipped weights (tracked, ~70 MiB) alone exceed what a GPU call may send (64 MiB), and the GPU run does not
# need them: put them aside before the call and back after it.
#
#   bash gpu/weights-aside.sh aside    # weights/ -> local/weights-aside (ignored, not carried), untracked for now
#   bash gpu/weights-aside.sh back     # and back, tracked as before
#
# The tool counts the tracked files of git's index, so moving the folder is not enough: `git rm --cached` takes
# it out of the index too, and `back` restores both. Commit nothing in between.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
case "${1:-}" in
  aside)
    [ -d weights ] || { echo "no weights/ here: already aside?" >&2; exit 1; }
    [ ! -e local/weights-aside ] || { echo "local/weights-aside exists: run 'back' first" >&2; exit 1; }
    mkdir -p local && mv weights local/weights-aside
    git rm -r --cached -q weights
    echo "weights/ is in local/weights-aside; bring it back with: bash gpu/weights-aside.sh back" ;;
  back)
    [ -d local/weights-aside ] || { echo "nothing aside (local/weights-aside)" >&2; exit 1; }
    [ ! -e weights ] || { echo "weights/ exists: move it away first" >&2; exit 1; }
    mv local/weights-aside weights
    git reset -q -- weights
    git status --short -- weights ;;
  *) echo "usage: bash gpu/weights-aside.sh aside|back" >&2; exit 2 ;;
esac
