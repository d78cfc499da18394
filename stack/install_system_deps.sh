#!/usr/bin/env bash
# Check (and on Debian/Ubuntu as root, install) the system tools the local stack needs:
#   java 17+, mvn (only without KAFKA_HOME), MariaDB server + client binaries, kcat, promtool
#   (the alert rules' tests), and openssl with STACK_SECURITY=on (certificates and passwords).
# We install mariadb-server-core rather than mariadb-server: same binaries, but no
# system service that would auto-start and grab port 3306.
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing_pkgs=()
missing_desc=()
need() { missing_pkgs+=("$1"); missing_desc+=("$2"); }

java_major() {
    # `java -version` prints e.g.: openjdk version "17.0.15" 2025-04-15  (or "1.8.0_x")
    java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*/\1 \3/p' | head -n1 \
        | awk '{ print ($1 == 1) ? $2 : $1 }'
}

# Debian 12 ships OpenJDK 17, Debian 13 only 21; Kafka 4 runs on either.
java_package() {
    local pkg
    for pkg in openjdk-17-jre-headless openjdk-21-jre-headless default-jre-headless; do
        apt-cache show "$pkg" >/dev/null 2>&1 && { echo "$pkg"; return; }
    done
    echo openjdk-17-jre-headless
}
if ! command -v java >/dev/null 2>&1; then
    need "$(java_package)" "java 17+"
elif jv="$(java_major)"; (( ${jv:-0} < 17 )); then
    need "$(java_package)" "java 17+ (found: $(java -version 2>&1 | head -n1))"
fi
if [[ -z "${KAFKA_HOME:-}" ]] && ! command -v mvn >/dev/null 2>&1; then
    need maven "mvn (resolves Kafka jars; or set KAFKA_HOME to an unpacked Kafka)"
fi
if ! command -v mariadbd >/dev/null 2>&1 || ! command -v mariadb-install-db >/dev/null 2>&1; then
    need mariadb-server-core "mariadbd + mariadb-install-db"
fi
if ! command -v mariadb >/dev/null 2>&1; then
    need mariadb-client "mariadb client"
fi
if ! command -v kcat >/dev/null 2>&1; then
    need kcat "kcat (Kafka CLI used for checks/debugging)"
fi
if ! command -v promtool >/dev/null 2>&1; then
    need prometheus "promtool (checks and unit-tests monitoring/prometheus/alerts.yml)"
fi
if [[ "$STACK_SECURITY" == on ]] && ! command -v openssl >/dev/null 2>&1; then
    need openssl "openssl (the secured stack's certificates)"
fi

((${#missing_pkgs[@]} == 0)) && exit 0

info "missing: $(IFS=,; echo "${missing_desc[*]}")"
if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "please install these packages (Debian/Ubuntu names): ${missing_pkgs[*]}
        e.g.: sudo apt-get install -y ${missing_pkgs[*]}"
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg run instead of failing on the lock.
apt_opts=(-y -q -o DPkg::Lock::Timeout=300)
# Package lists are empty on fresh containers; refresh them only then.
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    info "running apt-get update"
    apt-get "${apt_opts[@]}" update
fi
info "installing: ${missing_pkgs[*]}"
apt-get "${apt_opts[@]}" install --no-install-recommends "${missing_pkgs[@]}" \
    || { info "install failed; retrying after apt-get update"; apt-get "${apt_opts[@]}" update \
         && apt-get "${apt_opts[@]}" install --no-install-recommends "${missing_pkgs[@]}"; } \
    || die "apt-get install ${missing_pkgs[*]} failed"
# Debian's prometheus package, installed for promtool, enables and starts a Prometheus server on
# :9090, the port docker compose's Prometheus publishes; we only want the binary.
if [[ " ${missing_pkgs[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1 \
        && [[ -d /run/systemd/system ]]; then
    info "disabling the prometheus system service the package started (only promtool is needed)"
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
