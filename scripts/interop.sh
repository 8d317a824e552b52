#!/usr/bin/env bash
# Interop with real SIP software from Debian's packages (filled in below).
set -euo pipefail
echo "interop: no scenarios yet"
