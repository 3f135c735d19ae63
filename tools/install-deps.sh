#!/usr/bin/env bash
# Installs, with apt-get, what zcopy needs on Debian 12 and is missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libcmocka-dev liburing-dev doxygen iproute2
      libmimalloc-dev libjemalloc-dev python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root (or install those packages) first" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
