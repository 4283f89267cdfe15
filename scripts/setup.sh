#!/usr/bin/env bash
# Install what cacheflow's build and tests need and a fresh Debian machine may lack:
# the real cache servers the tests start (redis-server, memcached), git, the C headers
# git2 builds against, and Chromium (the drift report's HTML page is opened headless).
# Does nothing when everything is present.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v git >/dev/null 2>&1 || need+=(git)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# Commit-trust tests sign commits with real keys.
command -v gpg >/dev/null 2>&1 || need+=(gnupg)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
# The drift test renders the HTML report in headless Chromium.
command -v chromium >/dev/null 2>&1 || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
