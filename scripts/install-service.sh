#!/usr/bin/env bash
# Install (or upgrade) shd as a systemd service from this checkout. Safe to run again: every step checks first.
#
#   sudo scripts/install-service.sh [--dry-run] [--no-start]
#
#   --dry-run   print the steps without changing anything (needs no root, never asks for or prints the token)
#   --no-start  install everything but do not call systemctl (also skipped when systemd is not running)
#
# What it does:
#   1. system user and group `shd` (fixed, not DynamicUser: the inbox/outbox are shared with people)
#   2. /opt/shd/venv with this checkout pip-installed (the [systemd] extra when libsystemd's headers are present)
#   3. /etc/shd/shd.toml from config/shd.toml, only if absent, with [paths] pointed at /srv/shd and /var/lib/shd
#   4. /srv/shd/inbox (setgid, group-writable: people in group shd drop files) and /srv/shd/outbox
#   5. /etc/shd/replicate_token (root, 0600), only if absent: from $REPLICATE_API_TOKEN or asked for on the terminal;
#      systemd hands it to the service with LoadCredential=
#   6. /etc/systemd/system/shd.service, daemon-reload, enable --now (restart when it was already running)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHD_USER=shd
PREFIX=/opt/shd
VENV="$PREFIX/venv"
ETC_DIR=/etc/shd
CONFIG="$ETC_DIR/shd.toml"
TOKEN_FILE="$ETC_DIR/replicate_token"
SRV_DIR=/srv/shd
STATE_DIR=/var/lib/shd
UNIT_DST=/etc/systemd/system/shd.service

DRY_RUN=0
NO_START=0

usage() {
    sed -n -e '/^set -euo pipefail/q' -e '2,$s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --no-start) NO_START=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            printf 'unknown option: %s\n\n' "$1" >&2
            usage >&2
            exit 2
            ;;
    esac
    shift
done

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'install-service: %s\n' "$*" >&2
    exit 1
}

# Run a command, or only show it under --dry-run.
run() {
    if ((DRY_RUN)); then
        printf '    +'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# The venv and the unit must be readable by the shd user whatever root's umask is.
umask 022

[[ -f "$REPO_ROOT/pyproject.toml" && -f "$REPO_ROOT/shd.service" ]] ||
    die "$REPO_ROOT does not look like the shd checkout (pyproject.toml, shd.service)"
if ((!DRY_RUN)) && ((EUID != 0)); then
    die "run as root (sudo $0), or with --dry-run to see the steps"
fi
command -v python3 >/dev/null || die "python3 is required"

# -- 1. user and group -------------------------------------------------------------------------------------------
if getent group "$SHD_USER" >/dev/null; then
    say "group $SHD_USER exists"
else
    say "creating system group $SHD_USER"
    run groupadd --system "$SHD_USER"
fi
if id -u "$SHD_USER" >/dev/null 2>&1; then
    say "user $SHD_USER exists"
else
    say "creating system user $SHD_USER"
    nologin="$(command -v nologin || echo /usr/sbin/nologin)"
    run useradd --system --gid "$SHD_USER" --home-dir "$STATE_DIR" --no-create-home \
        --shell "$nologin" --comment "shd video daemon" "$SHD_USER"
fi

# -- 2. virtual environment --------------------------------------------------------------------------------------
if [[ -x "$VENV/bin/python" ]]; then
    say "virtual environment $VENV exists"
else
    say "creating virtual environment $VENV"
    run install -d -m 0755 "$PREFIX"
    run python3 -m venv "$VENV"
fi
spec="$REPO_ROOT"
if command -v pkg-config >/dev/null && pkg-config --exists libsystemd; then
    spec="${REPO_ROOT}[systemd]" # native journal fields; shd speaks sd_notify itself without it
fi
say "installing $spec into $VENV"
run "$VENV/bin/pip" install --quiet --upgrade "$spec"

# -- 3. configuration --------------------------------------------------------------------------------------------
run install -d -m 0755 "$ETC_DIR"
if [[ -e "$CONFIG" ]]; then
    say "$CONFIG exists, left as it is"
else
    [[ -f "$REPO_ROOT/config/shd.toml" ]] || die "$REPO_ROOT/config/shd.toml is missing"
    say "installing $CONFIG (paths: $SRV_DIR/inbox, $SRV_DIR/outbox, state in $STATE_DIR)"
    # The sample's relative paths would resolve against /etc/shd, which the unit keeps read-only.
    run install -m 0644 "$REPO_ROOT/config/shd.toml" "$CONFIG"
    run sed -E -i \
        -e "s#^(inbox[[:space:]]*=[[:space:]]*)\"[^\"]*\"#\\1\"$SRV_DIR/inbox\"#" \
        -e "s#^(outbox[[:space:]]*=[[:space:]]*)\"[^\"]*\"#\\1\"$SRV_DIR/outbox\"#" \
        -e "s#^(state_dir[[:space:]]*=[[:space:]]*)\"[^\"]*\"#\\1\"$STATE_DIR\"#" \
        "$CONFIG"
fi

# -- 4. shared folders -------------------------------------------------------------------------------------------
say "folders $SRV_DIR/{inbox,outbox} owned by $SHD_USER:$SHD_USER"
run install -d -o root -g root -m 0755 "$SRV_DIR"
# setgid: files people drop get group shd, so shd can read them; group-writable: members of shd may drop files.
run install -d -o "$SHD_USER" -g "$SHD_USER" -m 2775 "$SRV_DIR/inbox"
run chmod 2775 "$SRV_DIR/inbox"
# group shd may collect results (the unit's UMask=0027 keeps them from other users).
run install -d -o "$SHD_USER" -g "$SHD_USER" -m 2750 "$SRV_DIR/outbox"
run chmod 2750 "$SRV_DIR/outbox"

# -- 5. Replicate token ------------------------------------------------------------------------------------------
have_token=1
if [[ -e "$TOKEN_FILE" ]]; then
    say "$TOKEN_FILE exists, left as it is"
elif ((DRY_RUN)); then
    say "would write $TOKEN_FILE (root, 0600) from \$REPLICATE_API_TOKEN or a hidden prompt"
else
    token="${REPLICATE_API_TOKEN:-}"
    if [[ -z "$token" && -t 0 ]]; then
        read -r -s -p "Replicate API token (input hidden): " token
        printf '\n'
    fi
    if [[ -z "$token" ]]; then
        have_token=0
        printf 'install-service: no token: set REPLICATE_API_TOKEN or run on a terminal; then run this again\n' >&2
    else
        say "writing $TOKEN_FILE (root, 0600)"
        tmp="$(mktemp "$ETC_DIR/.replicate_token.XXXXXX")" # mktemp creates it 0600
        printf '%s' "$token" >"$tmp"                          # printf is a builtin: the token is not in ps
        chown root:root "$tmp"
        chmod 0600 "$tmp"
        mv -f "$tmp" "$TOKEN_FILE"
    fi
    unset token
fi

# -- 6. unit -----------------------------------------------------------------------------------------------------
say "installing $UNIT_DST"
run install -m 0644 "$REPO_ROOT/shd.service" "$UNIT_DST"

if ((NO_START)); then
    say "--no-start: not calling systemctl; later: systemctl daemon-reload && systemctl enable --now shd"
elif [[ ! -d /run/systemd/system ]]; then
    say "systemd is not running here: not calling systemctl; later: systemctl daemon-reload && systemctl enable --now shd"
elif ((!have_token)); then
    run systemctl daemon-reload
    die "not starting shd without $TOKEN_FILE (LoadCredential= would fail)"
else
    was_active=0
    systemctl is-active --quiet shd && was_active=1
    run systemctl daemon-reload
    run systemctl enable --now shd
    if ((was_active)); then
        say "shd was running: restarting it on the new code"
        run systemctl restart shd
    fi
    say "done: systemctl status shd; journalctl -u shd -f"
fi
say "people who drop videos need group $SHD_USER: usermod -aG $SHD_USER NAME"
