#!/bin/sh
# Installs pktagent from this bundle, offline: a virtual environment on the system's python3 at
# /opt/pktagent/venv, every wheel checked against the sha256 in requirements.lock, the pktagent
# system user, /etc/pktagent/config.yml if there is none, and the systemd unit, enabled and started.
# Run as root from the unpacked bundle; running it again with a newer bundle upgrades in place.
set -eu

PREFIX=/opt/pktagent
VENV=$PREFIX/venv
CONFIG_DIR=/etc/pktagent
STATE_DIR=/var/lib/pktagent
ACCOUNT=pktagent
SERVICE=pktagent.service
UNIT=/etc/systemd/system/$SERVICE
PYTHON=${PKTAGENT_PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<EOF
usage: sh install.sh [--no-systemd] [--grpc]
       sh install.sh --uninstall [--purge]

  (no option)   install or upgrade pktagent, then enable and (re)start $SERVICE
  --no-systemd  everything but the unit (containers, chroots): start it yourself
  --grpc        also the OTLP/gRPC exporter (requirements-grpc.lock)
  --uninstall   stop and remove the service and $PREFIX; keeps $CONFIG_DIR and $STATE_DIR
  --purge       with --uninstall: also remove $CONFIG_DIR, $STATE_DIR and the $ACCOUNT user
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

say() {
    echo "install.sh: $*"
}

systemd_running() {
    [ -d /run/systemd/system ]
}

# -- the target: root, Python 3.11 or newer, the bundle's Python and machine ----------------------

check_python() {
    [ -x "$PYTHON" ] || die "no $PYTHON here: pktagent needs Python 3.11 or newer (apt-get install python3 python3-venv)"
    # A 32-bit Python on a 64-bit ARM kernel (32-bit Raspberry Pi OS on a Pi 4) says aarch64 in uname: its pointers tell.
    found=$("$PYTHON" -c 'import platform, sys
m = platform.machine()
m = "armv7l" if sys.maxsize <= 2**32 and m in ("aarch64", "armv8l") else m
print("%d.%d %s" % (sys.version_info[0], sys.version_info[1], m))') || die "$PYTHON does not run"
    py=${found% *}
    machine=${found#* }
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "pktagent needs Python 3.11 or newer; $PYTHON is $py"
    case $machine in
        armv6l | armv7l) die "this is 32-bit ARM ($machine): numpy and pcapy-ng publish no wheels for it, so there is no bundle; see README, Install, 32-bit Raspberry Pi OS" ;;
    esac
    [ "$machine" = "$BUNDLE_MACHINE" ] || die "this bundle is for $BUNDLE_MACHINE and this system is $machine: use the $BUNDLE_VERSION bundle for linux_$machine (make bundle PLATFORM=linux_$machine)"
    [ "$py" = "$BUNDLE_PYTHON" ] || die "this bundle's wheels are for Python $BUNDLE_PYTHON and $PYTHON is $py: build one with make bundle PLATFORM=$BUNDLE_PLATFORM PYTHON=$py"
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || die "$PYTHON cannot make a virtual environment: apt-get install python3-venv"
}

# -- install --------------------------------------------------------------------------------------

create_account() {
    getent group "$ACCOUNT" >/dev/null || groupadd --system "$ACCOUNT"
    getent passwd "$ACCOUNT" >/dev/null ||
        useradd --system --gid "$ACCOUNT" --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
            --comment "pktagent network traffic exporter" "$ACCOUNT"
}

install_software() {
    if [ -x "$VENV/bin/python" ] && [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$py" ]; then
        say "the system's Python changed: making $VENV anew"
        rm -rf "$VENV"
    fi
    mkdir -p "$PREFIX"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    # The lock's wheels, sha256-checked, from the bundle alone; pktagent always put back; what the lock lacks removed.
    "$VENV/bin/python" "$HERE/sync_venv.py" "$HERE" "$HERE/$LOCK" "$PREFIX/installed.lock"
    cp "$HERE/bundle.env" "$PREFIX/bundle.env"
    cp "$HERE/install.sh" "$PREFIX/install.sh"
}

install_config() {
    install -d -m 0750 -o root -g "$ACCOUNT" "$CONFIG_DIR"
    if [ -e "$CONFIG_DIR/config.yml" ]; then
        say "kept $CONFIG_DIR/config.yml"
    else
        install -m 0640 -o root -g "$ACCOUNT" "$HERE/config.yml" "$CONFIG_DIR/config.yml"
        say "wrote the default $CONFIG_DIR/config.yml"
    fi
    [ -d "$STATE_DIR" ] || install -d -m 0750 -o "$ACCOUNT" -g "$ACCOUNT" "$STATE_DIR"
    "$VENV/bin/pktagent" check-config "$CONFIG_DIR/config.yml" >/dev/null ||
        die "$CONFIG_DIR/config.yml is not valid for pktagent $BUNDLE_VERSION (above): fix it and run install.sh again"
}

install_unit() {
    install -m 0644 "$HERE/pktagent.service" "$UNIT"
    systemctl daemon-reload
    systemctl enable --quiet "$SERVICE"
    systemctl restart "$SERVICE"
    systemctl is-active --quiet "$SERVICE" || die "$SERVICE did not start: journalctl -u $SERVICE"
    say "$SERVICE is enabled and running"
}

# -- uninstall ------------------------------------------------------------------------------------

uninstall() {
    if [ -e "$UNIT" ]; then
        if systemd_running; then systemctl disable --now --quiet "$SERVICE" || true; fi
        rm -f "$UNIT"
        if systemd_running; then systemctl daemon-reload; fi
    fi
    rm -rf "$PREFIX"
    if [ "$purge" = 1 ]; then
        rm -rf "$CONFIG_DIR" "$STATE_DIR"
        if getent passwd "$ACCOUNT" >/dev/null; then userdel "$ACCOUNT"; fi
        if getent group "$ACCOUNT" >/dev/null; then groupdel "$ACCOUNT"; fi
        say "removed pktagent, $CONFIG_DIR, $STATE_DIR and the $ACCOUNT user"
    else
        say "removed pktagent; kept $CONFIG_DIR, $STATE_DIR and the $ACCOUNT user (--purge removes them)"
    fi
}

# -- main -----------------------------------------------------------------------------------------

systemd=1
action=install
purge=0
LOCK=requirements.lock
for arg in "$@"; do
    case $arg in
        --no-systemd) systemd=0 ;;
        --grpc) LOCK=requirements-grpc.lock ;;
        --uninstall) action=uninstall ;;
        --purge) purge=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "install.sh: unknown option $arg" >&2
            usage >&2
            exit 2
            ;;
    esac
done
[ "$purge" = 0 ] || [ "$action" = uninstall ] || die "--purge goes with --uninstall"
[ "$(id -u)" = 0 ] || die "run it as root: sudo sh install.sh $*"
if [ "$action" = uninstall ]; then
    uninstall
    exit 0
fi
[ -f "$HERE/bundle.env" ] || die "no bundle.env beside install.sh: run it from the unpacked bundle"
# shellcheck source=/dev/null  # written by bundle/build.py: BUNDLE_VERSION, _REVISION, _PLATFORM, _MACHINE, _PYTHON
. "$HERE/bundle.env"
if [ "$systemd" = 1 ] && ! systemd_running; then
    die "systemd is not running here: run install.sh --no-systemd (containers, chroots) and start pktagent yourself"
fi
check_python
create_account
install_software
install_config
say "installed pktagent $BUNDLE_VERSION (revision $BUNDLE_REVISION) in $VENV"
if [ "$systemd" = 1 ]; then install_unit; fi
