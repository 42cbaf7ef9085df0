#!/usr/bin/env bash
# Installs the system packages that Keelson's build and its real-client integration tests
# (node/tests/clients.rs) need, on Debian 12 as root. Idempotent: every package is checked first
# (a command it provides, or a file, or its dpkg status), `apt-get update` runs only when something
# is missing, and a prepared machine does nothing. Prints what it installed.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-deps.sh: must run as root (or with sudo available)" >&2
        exit 1
    fi
fi

# package  check
#   check = "cmd:NAME"   the command NAME is on PATH
#           "file:PATH"  the file PATH exists
#           "dpkg"       dpkg says the package is installed
PACKAGES=(
    "librocksdb-dev       file:/usr/include/rocksdb/db.h"
    "libclang-dev         dpkg"
    "protobuf-compiler    cmd:protoc"
    "skopeo               cmd:skopeo"
    "umoci                cmd:umoci"
    "docker.io            cmd:dockerd"
    "docker-compose       cmd:docker-compose"
    "haproxy              cmd:haproxy"
    "chromium             cmd:chromium"
    "containerd           cmd:containerd"
    "containerd           cmd:ctr"
    "runc                 cmd:runc"
    "tini                 file:/usr/bin/tini-static"
    "podman               cmd:podman"
    "conmon               cmd:conmon"
    "crun                 cmd:crun"
    "uidmap               cmd:newuidmap"
    "fuse-overlayfs       cmd:fuse-overlayfs"
    "slirp4netns          cmd:slirp4netns"
    "iptables             cmd:iptables"
    "busybox-static       dpkg"
    "curl                 cmd:curl"
    "openssl              cmd:openssl"
    "jq                   cmd:jq"
    "wrk                  cmd:wrk"
    "docker-registry      cmd:docker-registry"
    "tar                  cmd:tar"
    "gzip                 cmd:gzip"
    "ca-certificates      file:/etc/ssl/certs/ca-certificates.crt"
)

have() {
    local pkg="$1" check="$2"
    case "$check" in
        cmd:*) command -v "${check#cmd:}" >/dev/null 2>&1 ;;
        file:*) [ -e "${check#file:}" ] ;;
        dpkg) dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ;;
        *) echo "install-deps.sh: bad check $check" >&2; return 1 ;;
    esac
}

missing=()
for entry in "${PACKAGES[@]}"; do
    # shellcheck disable=SC2086
    set -- $entry
    pkg="$1" check="$2"
    if ! have "$pkg" "$check"; then
        case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
    fi
done

# python3 + pip for the `oras` client library, Playwright (the console's browser tests) and
# openapi-spec-validator (node/tests/openapi.rs).
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-pip python3-venv)
elif ! { python3 -c 'import oras' && python3 -c 'import playwright' && python3 -c 'import openapi_spec_validator'; } >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
    missing+=(python3-pip)
fi

installed=()
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps.sh: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    installed+=("${missing[@]}")
fi

# Python packages from PyPI, as module:package: oras (an OCI client), playwright (drives Debian's
# chromium; its own browser download is never used) and openapi-spec-validator (checks the
# management API's OpenAPI document), cryptography (an independent implementation of the
# signatures Keelson checks and makes) and cyclonedx-python-lib (validates the SBOMs it makes).
for entry in oras:oras playwright:playwright openapi_spec_validator:openapi-spec-validator cryptography:cryptography "cyclonedx:cyclonedx-python-lib[json-validation]"; do
    module="${entry%%:*}" package="${entry#*:}"
    python3 -c "import $module" >/dev/null 2>&1 && continue
    echo "install-deps.sh: installing the $package Python package (pip)"
    # Debian's own python3 is "externally managed" (PEP 668); a pyenv/venv python is not.
    if ! python3 -m pip install -q "$package" 2>/dev/null; then
        python3 -m pip install -q --break-system-packages "$package"
    fi
    python3 -c "import $module" || { echo "install-deps.sh: $module still not importable" >&2; exit 1; }
    installed+=("pip:$package")
done

if [ "${#installed[@]}" -eq 0 ]; then
    echo "install-deps.sh: everything already installed"
else
    echo "install-deps.sh: installed: ${installed[*]}"
fi
