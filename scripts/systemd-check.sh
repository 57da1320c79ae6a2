#!/usr/bin/env bash
# Opt-in check, not part of the test suite: shd.service under a real systemd, installed as a user installs it.
#
#   sudo scripts/systemd-check.sh            # about 45 s (the first run also builds a wheelhouse: +1 minute)
#
# A real systemd boots as PID 1 of a systemd-nspawn container (Debian: apt install systemd-container) whose root is
# an overlay of this machine's / with a tmpfs on top, so nothing here is changed; the container has only loopback.
# Inside it, scripts/install-service.sh installs shd (pip from a wheelhouse built here first, in
# ${SHD_CHECK_CACHE:-/var/cache/shd-systemd-check}), the stand-in Replicate server (python -m tests.standin) plays
# Replicate on 127.0.0.1, and these are checked, in order:
#   1. start: `systemctl start` returns once shd sent READY=1; STATUS= shows in `systemctl status`; watchdog on
#   2. a video dropped in /srv/shd/inbox comes out as /srv/shd/outbox/<name>.mp4, private files in /var/lib/shd
#   3. reload (SIGHUP): RELOADING=1 ... READY=1, still running
#   4. kill -9 while predictions run: systemd restarts shd, which resumes the job without paying twice
#   5. a file that is not a video goes to /var/lib/shd/failed/ with its .error.txt
#   6. stop: within a few seconds, no ffmpeg left
#   7. the token file named by LoadCredential= missing: the unit fails at step CREDENTIALS (243) and is NOT
#      restarted in a loop; with the file back, it starts again
# Each check prints "ok: ..."; the first that fails prints "FAILED: ..." with the unit's journal, and exits 1.
# Background: ../shared/docs/outputs-cost-ops.md §6.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SHD_CHECK_CACHE:-/var/cache/shd-systemd-check}"
PATH_IN=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PORT=8443

die() {
    printf 'systemd-check: %s\n' "$*" >&2
    exit 2
}

if [[ "${1:-}" != --inside ]]; then
    ((EUID == 0)) || die "run as root (it mounts an overlay and boots a container)"
    command -v systemd-nspawn >/dev/null || die "systemd-nspawn is missing: apt install systemd-container"
    PY="${PYTHON:-}"
    if [[ -z "$PY" ]]; then
        if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
    fi
    "$PY" -c "import trustme, imageio_ffmpeg" 2>/dev/null ||
        die "$PY lacks the test dependencies: pip install -e '.[test]' first (or set PYTHON=)"
    # The interpreter itself, not a shim or a name on PATH: the container's PATH would find another python3.
    PY="$("$PY" -c 'import sys; print(sys.executable)')"
    # Everything the container sees must be on the root file system (the overlay's lower layer), outside /tmp
    # (nspawn mounts a tmpfs there).
    WORK="$(mktemp -d /var/tmp/shd-systemd-check.XXXXXX)"
    trap 'rm -rf "$WORK"' EXIT
    mkdir -p "$CACHE/wheels"
    echo "== wheelhouse for the container (no network in there): $CACHE/wheels"
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    mkdir "$WORK/src"
    tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude=./build -cf - . | tar -C "$WORK/src" -xf -
    if ! "$PY" -m pip wheel --quiet --wheel-dir "$CACHE/wheels" "setuptools>=68" wheel "$WORK/src" \
        >"$WORK/pip.log" 2>&1; then
        grep -v "^WARNING: Location" "$WORK/pip.log" >&2
        die "building the wheelhouse failed"
    fi
    echo "== test videos"
    (cd "$REPO" && "$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path
from tests.videos import make_video
work = Path(sys.argv[1])
make_video(work / "clip.mp4", seconds=3.0, size=(160, 120))
# Another size: its first seconds are not clip.mp4's frames, whose prompts shd would reuse instead of paying
make_video(work / "long.mp4", seconds=12.0, size=(192, 144))
(work / "notes.mp4").write_text("not a video\n" * 20)
EOF
    )
    chmod -R a+rX "$WORK"
    unshare --mount --propagation private "$0" --inside "$WORK" "$PY"
    exit $?
fi

# ---- inside a private mount namespace ---------------------------------------------------------------------------
WORK="$2"
PY="$3"
WHEELS="$CACHE/wheels"
ROOT="$WORK/root"
mkdir -p "$WORK/ovl"
mount -t tmpfs -o size=2g tmpfs "$WORK/ovl"
mkdir -p "$WORK/ovl/upper" "$WORK/ovl/work" "$ROOT"
mount -t overlay overlay -o "lowerdir=/,upperdir=$WORK/ovl/upper,workdir=$WORK/ovl/work" "$ROOT"
# A clean slate where the service lives, whatever this machine has there.
rm -rf "$ROOT/etc/shd" "$ROOT/opt/shd" "$ROOT/srv/shd" "$ROOT/var/lib/shd" "$ROOT/etc/systemd/system/shd.service"*

T0=$SECONDS
systemd-nspawn -q -D "$ROOT" -M shd-check --register=no --keep-unit --link-journal=no --private-network -b \
    >"$WORK/console.log" 2>&1 &
NSPAWN=$!
CT=""
cleanup() {
    if [[ -n "$CT" ]] && kill -0 "$CT" 2>/dev/null; then
        kill -s RTMIN+4 "$CT" 2>/dev/null || true # systemd's "power off"
        for _ in $(seq 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.1; done
    fi
    kill -9 "$NSPAWN" 2>/dev/null || true
    wait "$NSPAWN" 2>/dev/null || true
    umount -l "$ROOT" "$WORK/ovl" 2>/dev/null || true
}
trap cleanup EXIT

# The container's PID 1, as this namespace sees it: a descendant of nspawn whose innermost pid is 1.
for _ in $(seq 200); do
    for p in $(pgrep -P "$NSPAWN"; for c in $(pgrep -P "$NSPAWN"); do pgrep -P "$c"; done); do
        if awk '/^NSpid:/ { exit !($NF == 1) }' "/proc/$p/status" 2>/dev/null; then CT=$p; fi
    done
    [[ -n "$CT" ]] && break
    kill -0 "$NSPAWN" 2>/dev/null || { cat "$WORK/console.log"; die "systemd-nspawn exited"; }
    sleep 0.05
done
[[ -n "$CT" ]] || die "cannot find the container's PID 1"

in_ct() { nsenter -t "$CT" -a -- env -i PATH="$PATH_IN" HOME=/root LANG=C.UTF-8 "$@"; }
shd_status() { in_ct /opt/shd/venv/bin/shd status --json --config /etc/shd/shd.toml; }
journal() { in_ct journalctl -u shd --no-pager -o cat | tail -n "${1:-40}"; }
ok() { printf 'ok: %s (%ss)\n' "$*" "$((SECONDS - T0))"; }
fail() {
    printf 'FAILED: %s\n--- journalctl -u shd (last lines) ---\n' "$*" >&2
    journal 60 >&2 || true
    printf -- '--- the stand-in server ---\n' >&2
    in_ct tail -n 20 /etc/shd-standin/log >&2 || true
    exit 1
}
# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND (inside the container) until it succeeds.
wait_until() {
    local limit=$1 what=$2
    shift 2
    local end=$((SECONDS + limit))
    until in_ct "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || fail "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}
standin() { # standin ACTION [JSON]: the stand-in's control API
    local body=${2:-'{}'}
    in_ct curl -sS --cacert /etc/shd-standin/ca.pem -X POST -d "$body" "https://127.0.0.1:$PORT/__control/$1"
}

# "degraded" is fine: some units need hardware the container has not.
wait_until 30 "systemd in the container" sh -c \
    'case "$(systemctl is-system-running --wait 2>/dev/null)" in running | degraded) ;; *) exit 1 ;; esac'
ok "container booted, systemd $(in_ct systemctl --version | awk 'NR == 1 { print $2 }') as PID 1"

# ---- the stand-in Replicate server, then shd installed as documented --------------------------------------------
in_ct mkdir -p /etc/shd-standin
in_ct sh -c "cd '$REPO' && exec setsid '$PY' -m tests.standin --workdir /etc/shd-standin --port $PORT \
    --run-time 0.3 >/etc/shd-standin/log 2>&1 &"
wait_until 30 "the stand-in server" sh -c "grep -q '\"url\"' /etc/shd-standin/log"
in_ct install -m 0644 /etc/shd-standin/standin-ca.pem /etc/shd-standin/ca.pem
ok "stand-in Replicate server on https://127.0.0.1:$PORT"

in_ct env REPLICATE_API_TOKEN=r8_test PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELS" "$REPO/scripts/install-service.sh" \
    --no-start >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; fail "install-service.sh"; }
# Small paintings and a short stability window keep the check quick; Replicate is the stand-in.
in_ct sed -i -e 's/^stable_seconds = .*/stable_seconds = 1.0/' -e 's/^width = 1024/width = 64/' \
    -e 's/^height = 1024/height = 64/' /etc/shd/shd.toml
in_ct mkdir -p /etc/systemd/system/shd.service.d
in_ct sh -c "printf '[Service]\nEnvironment=REPLICATE_BASE_URL=https://127.0.0.1:$PORT SSL_CERT_FILE=/etc/shd-standin/ca.pem\n' \
    >/etc/systemd/system/shd.service.d/standin.conf"
in_ct systemctl daemon-reload
ok "installed with scripts/install-service.sh"

# ---- 1. start ---------------------------------------------------------------------------------------------------
in_ct systemctl start shd || fail "systemctl start shd"
[[ "$(in_ct systemctl is-active shd)" == active ]] || fail "not active after start"
status_text=$(in_ct systemctl show -p StatusText --value shd)
[[ "$status_text" == *"job(s) active"* ]] || fail "no STATUS= line: '$status_text'"
[[ "$(in_ct systemctl show -p WatchdogUSec --value shd)" != 0 ]] || fail "no watchdog"
ok "start: READY=1 (systemctl start returned, active), STATUS=\"$status_text\", watchdog on"

# ---- 2. a video in, an mp4 out ------------------------------------------------------------------------------------
in_ct install -m 0644 "$WORK/clip.mp4" /srv/shd/inbox/clip.mp4
wait_until 60 "/srv/shd/outbox/clip.mp4" test -s /srv/shd/outbox/clip.mp4
shd_status | grep -q '"state": "done"' || fail "the job is not done in shd status"
private=$(in_ct find /var/lib/shd -mindepth 1 -perm /077 ! -name clip.mp4 -print -quit)
[[ -z "$private" ]] || fail "not private: $private"
ok "video in -> /srv/shd/outbox/clip.mp4 ($(in_ct stat -c '%a %U:%G' /srv/shd/outbox/clip.mp4))"

# ---- 3. reload ----------------------------------------------------------------------------------------------------
in_ct systemctl reload shd || fail "systemctl reload shd"
wait_until 10 "the reload in the journal" sh -c 'journalctl -u shd -o cat | grep -q reloaded'
[[ "$(in_ct systemctl is-active shd)" == active ]] || fail "not active after reload"
ok "reload"

# ---- 4. kill -9 while predictions run, restarted by systemd, resumed without paying twice --------------------------
standin set_latency '{"model": "stability-ai/sdxl", "queue_delay": 0.05, "run_time": 2.0}' >/dev/null
before=$(standin count_creates | sed 's/[^0-9]//g')
in_ct install -m 0644 "$WORK/long.mp4" /srv/shd/inbox/long.mp4
wait_until 60 "a painted frame of long.mp4" sh -c \
    "/opt/shd/venv/bin/shd status --json --config /etc/shd/shd.toml | grep -q '\"generated\": [1-9]'"
pid=$(in_ct systemctl show -p MainPID --value shd)
in_ct kill -9 "$pid"
wait_until 30 "systemd to restart shd" sh -c "[ \"\$(systemctl show -p MainPID --value shd)\" != $pid ] &&
    [ \"\$(systemctl show -p MainPID --value shd)\" != 0 ] && systemctl is-active -q shd"
wait_until 120 "/srv/shd/outbox/long.mp4" test -s /srv/shd/outbox/long.mp4
after=$(standin count_creates | sed 's/[^0-9]//g')
((after - before == 24)) || fail "12 frames took $((after - before)) predictions, not 24"
ok "kill -9 (pid $pid): restarted by systemd (NRestarts=$(in_ct systemctl show -p NRestarts --value shd)), resumed, 24 predictions for 12 frames"

# ---- 5. a bad file ------------------------------------------------------------------------------------------------
in_ct install -m 0644 "$WORK/notes.mp4" /srv/shd/inbox/notes.mp4
wait_until 60 "notes.mp4 moved to failed/" test -s /var/lib/shd/failed/notes.mp4.error.txt
ok "bad file -> /var/lib/shd/failed/notes.mp4: $(in_ct head -n 1 /var/lib/shd/failed/notes.mp4.error.txt)"

# ---- 6. stop ------------------------------------------------------------------------------------------------------
t=$SECONDS
in_ct systemctl stop shd
[[ "$(in_ct systemctl is-active shd)" != active ]] || fail "still active after stop"
((SECONDS - t <= 5)) || fail "stop took $((SECONDS - t))s"
ok "stop in $((SECONDS - t))s"

# ---- 7. the token file missing -------------------------------------------------------------------------------------
in_ct mv /etc/shd/replicate_token /etc/shd/replicate_token.away
in_ct systemctl reset-failed shd 2>/dev/null || true
in_ct systemctl start shd && fail "started without its token file"
sleep 12 # two RestartSec= periods: a restart loop would show by now
result="$(in_ct systemctl show -p ActiveState,Result,ExecMainStatus,NRestarts shd | tr '\n' ' ')"
[[ "$result" == *"ActiveState=failed"* && "$result" == *"ExecMainStatus=243"* && "$result" == *"NRestarts=0"* ]] ||
    fail "missing token file: $result"
ok "missing token file: ${result}not restarted; what the user sees:"
# `systemctl status` of a failed unit exits 3: what it prints is what we want, not its exit status.
{ in_ct systemctl status shd --no-pager -n 5 2>&1 || true; } | grep -E 'Active:|status=243|credential|CREDENTIALS' |
    sed 's/^/    /'

in_ct mv /etc/shd/replicate_token.away /etc/shd/replicate_token
in_ct systemctl restart shd || fail "start with the token file back"
ok "token file back: active again"

in_ct systemctl stop shd
echo "all checks passed in $((SECONDS - T0))s"
