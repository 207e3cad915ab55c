#!/bin/sh
# Regenerate the pictures under docs/ from the scenarios (no root needed: they draw the plan).
set -eu
cd "$(dirname "$0")/.."
python3 -m netlab graph scenarios/three-node.yaml -o docs/three-node.svg
