#!/usr/bin/env bash
# What cacheflow needs on a fresh Debian or Ubuntu machine: checked, installed with apt
# where it can be, and otherwise named with how to get it (exit 1).
#
#   scripts/setup.sh          the build (the main job): cargo at least Cargo.toml's
#                             rust-version, a C compiler and C headers (libgit2, libssh2
#                             and mimalloc are built from C), pkg-config, OpenSSL's
#                             headers, git
#   scripts/setup.sh --test   also what the tests start or use: redis-server,
#                             redis-sentinel (Debian's redis-sentinel package), memcached,
#                             etcd (Debian's etcd-server: the replicas' election),
#                             gpg and ssh-keygen (signed commits), promtool (the
#                             alerting rules; Debian's prometheus package, its server
#                             left stopped and disabled), a headless browser (the drift
#                             report's HTML page, the console): chromium, chromium-browser,
#                             google-chrome or google-chrome-stable, or CACHEFLOW_BROWSER;
#                             and chromedriver, which the console's tests drive it
#                             through (Debian: chromium-driver), or CACHEFLOW_CHROMEDRIVER
#
# Does nothing when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=build
case "${1:-}" in
  "") ;;
  --test) mode=test ;;
  *)
    echo "usage: scripts/setup.sh [--test]" >&2
    exit 1
    ;;
esac

fail() {
  printf 'setup: %s\n' "$@" >&2
  exit 1
}

# --- Rust: cargo at least the crate's rust-version --------------------------------------
# Checked first: nothing else is worth installing without it.
want=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)
rustup_how=(
  "Install Rust with rustup (https://rustup.rs), as the user who builds:"
  "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y"
  "  . \"\$HOME/.cargo/env\""
  "(Debian's and Ubuntu's own rustc and cargo packages are usually older than $want.)"
)
if ! command -v cargo >/dev/null 2>&1; then
  fail "cargo is not installed: cacheflow needs Rust $want or newer." "${rustup_how[@]}"
fi
have=$(cargo --version 2>/dev/null | awk '{print $2}')
have=${have%%-*}
# $1 >= $2 for dotted version numbers.
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
if [ -z "$have" ] || ! at_least "$have" "$want"; then
  where=$(command -v cargo)
  if command -v rustup >/dev/null 2>&1; then
    fail "$where is cargo ${have:-of an unknown version}; cacheflow needs Rust $want or newer (Cargo.toml's rust-version)." \
      "Update it: rustup update stable && rustup default stable"
  fi
  fail "$where is cargo ${have:-of an unknown version}; cacheflow needs Rust $want or newer (Cargo.toml's rust-version)." \
    "${rustup_how[@]}" \
    "Then make sure ~/.cargo/bin comes before $(dirname "$where") in PATH."
fi

# --- packages ---------------------------------------------------------------------------
need=()
# A C compiler with the C library's headers (build-essential: gcc, libc6-dev, make).
if ! { command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1; } ||
  [ ! -f /usr/include/stdio.h ]; then
  need+=(build-essential)
fi
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v git >/dev/null 2>&1 || need+=(git)

browser=""
if [ "$mode" = test ]; then
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  # The Sentinel tests start three real Sentinels.
  command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
  # The cluster-mode tests make a Redis Cluster with `redis-cli --cluster create`.
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  command -v memcached >/dev/null 2>&1 || need+=(memcached)
  # The replicas' tests start a three-member etcd cluster (Debian's etcd-server).
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  # Commit-trust tests sign commits with real keys.
  command -v gpg >/dev/null 2>&1 || need+=(gnupg)
  command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
  # TLS tests make their certificates with the openssl CLI and ask `serve` with curl.
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  # The alerting rules in deploy/prometheus are checked with Prometheus's own promtool,
  # which Debian ships in its prometheus package (the server it also starts is stopped
  # and disabled again below: the tests need only promtool).
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)

  # The browser, under any of its names (the drift test looks for the same ones). A name
  # counts only when it runs: Ubuntu's chromium-browser package is a stub asking for the
  # snap.
  for name in "${CACHEFLOW_BROWSER:-}" chromium chromium-browser google-chrome google-chrome-stable; do
    [ -n "$name" ] || continue
    path=$(command -v "$name" 2>/dev/null) || continue
    if "$path" --version >/dev/null 2>&1; then
      browser=$path
      break
    fi
  done
  os_id="" os_like=""
  if [ -r "${CACHEFLOW_OS_RELEASE:-/etc/os-release}" ]; then
    os_id=$(. "${CACHEFLOW_OS_RELEASE:-/etc/os-release}" && echo "${ID:-}")
    os_like=$(. "${CACHEFLOW_OS_RELEASE:-/etc/os-release}" && echo "${ID_LIKE:-}")
  fi
  if [ -z "$browser" ]; then
    browser_how=(
      "Or install Google Chrome from Google's .deb (it is in no distribution's apt), or any"
      "Chromium build, and set CACHEFLOW_BROWSER to its path."
    )
    case " $os_id $os_like " in
      *" ubuntu "*)
        # Ubuntu ships Chromium only as a snap; its apt package is a stub for it.
        # `snap list` needs snapd running (in a container it usually is not).
        if command -v snap >/dev/null 2>&1 && snap list >/dev/null 2>&1; then
          snap_browser=1
        else
          fail "the tests need a headless browser (the drift report's HTML page) and none was found" \
            "(looked for ${CACHEFLOW_BROWSER:+$CACHEFLOW_BROWSER, }chromium, chromium-browser, google-chrome, google-chrome-stable)." \
            "Ubuntu packages Chromium only as a snap (its chromium-browser package is a stub), and snap" \
            "does not work here. Where it does: snap install chromium." \
            "${browser_how[@]}"
        fi
        ;;
      *" debian "*) need+=(chromium) ;;
      *)
        fail "the tests need a headless browser (the drift report's HTML page) and none was found" \
          "(looked for ${CACHEFLOW_BROWSER:+$CACHEFLOW_BROWSER, }chromium, chromium-browser, google-chrome, google-chrome-stable)." \
          "This is not Debian or Ubuntu (${os_id:-unknown system}): install Chromium with its package manager." \
          "${browser_how[@]}"
        ;;
    esac
  fi

  # The console's tests drive the browser over WebDriver: chromedriver, of the browser's
  # version (Debian's chromium-driver goes with its chromium; the snap has its own).
  if [ -z "${CACHEFLOW_CHROMEDRIVER:-}" ] && ! command -v chromedriver >/dev/null 2>&1 &&
    ! command -v chromium.chromedriver >/dev/null 2>&1; then
    case " $os_id $os_like " in
      *" ubuntu "*)
        if [ "${snap_browser:-}" != 1 ]; then
          fail "the console's tests need chromedriver (they drive the browser over WebDriver) and none was found" \
            "(looked for \$CACHEFLOW_CHROMEDRIVER, chromedriver, chromium.chromedriver)." \
            "The chromium snap brings one (chromium.chromedriver): snap install chromium." \
            "With another browser, install the chromedriver of its version and set CACHEFLOW_CHROMEDRIVER to it."
        fi
        ;;
      *" debian "*) need+=(chromium-driver) ;;
      *)
        fail "the console's tests need chromedriver (they drive the browser over WebDriver) and none was found" \
          "(looked for \$CACHEFLOW_CHROMEDRIVER, chromedriver, chromium.chromedriver)." \
          "This is not Debian or Ubuntu (${os_id:-unknown system}): install the chromedriver of your browser's version" \
          "with its package manager, or set CACHEFLOW_CHROMEDRIVER to it."
        ;;
    esac
  fi
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    fail "missing: ${need[*]} (Debian package names), and there is no apt-get here: install them with this system's package manager."
  fi
  if [ -n "$sudo" ] && ! command -v sudo >/dev/null 2>&1; then
    fail "missing: ${need[*]}; as root: apt-get update && apt-get install ${need[*]}"
  fi
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  case " ${need[*]} " in
    *" prometheus "*)
      if command -v systemctl >/dev/null 2>&1; then
        $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
      fi
      ;;
  esac
fi
if [ "${snap_browser:-}" = 1 ]; then
  echo "setup: installing chromium (snap)" >&2
  $sudo snap install chromium || fail "snap install chromium failed (see above)." "${browser_how[@]}"
fi
