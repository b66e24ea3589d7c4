#!/usr/bin/env bash
# The sha a binary reports (and records in every run) must be the checkout's at its last build, not
# at the last CMake configure, so it follows commits built incrementally. Exit 77 (skip) outside a
# git checkout. Usage: check_version_names_head.sh H2TUNE SOURCE_DIR
set -uo pipefail
head=$(git -C "$2" rev-parse --short=12 HEAD 2>/dev/null) || exit 77
version=$("$1" --version | head -1)
if [[ $version != *"(git $head"* ]]; then
  echo "$version, but the checkout is at $head: rebuild (make -C build) before testing"
  exit 1
fi
