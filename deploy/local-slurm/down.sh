#!/usr/bin/env bash
# Tear down what up.sh stood up: Slurm jobs of the login user, slurmd, slurmctld, the login
# sshd, munged (if up.sh started it), the login user, slurm.conf, our ~/.slurm/config entry and
# the state directory. Debian packages stay installed. Idempotent.
#
# SkyPilot still remembers clusters it launched here: `sky down` them before running this, or
# `sky status --refresh` afterwards clears them.
set -euo pipefail

STATE=${SKYRUN_SLURM_DIR:-/var/lib/skyrun-slurm}
LOGIN_USER=${SKYRUN_SLURM_USER:-skyrun-slurm}
SLURM_CONFIG=${SKYRUN_SLURM_CONFIG:-$HOME/.slurm/config}

say() { printf '[local-slurm] %s\n' "$*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pidfile() {
  local name=$1 pidfile=$2
  if alive "$pidfile"; then
    say "stopping $name"
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pidfile" || break; sleep 0.1; done
    if alive "$pidfile"; then kill -9 "$(cat "$pidfile")" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
}

[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

if id "$LOGIN_USER" >/dev/null 2>&1 && alive "$STATE/slurmctld.pid"; then
  if [ -n "$(squeue -h -u "$LOGIN_USER" -o %i 2>/dev/null)" ]; then
    say "cancelling the Slurm jobs of $LOGIN_USER"
    scancel -u "$LOGIN_USER" || true
    for _ in $(seq 100); do [ -z "$(squeue -h -u "$LOGIN_USER" -o %i)" ] && break; sleep 0.2; done
  fi
fi
stop_pidfile slurmd "$STATE/slurmd.pid"
stop_pidfile slurmctld "$STATE/slurmctld.pid"
stop_pidfile sshd "$STATE/sshd.pid"
if [ -f "$STATE/munged.started" ]; then
  pidfile=/run/munge/munged.pid
  stop_pidfile munged "$pidfile"
fi

if id "$LOGIN_USER" >/dev/null 2>&1; then
  say "removing user $LOGIN_USER"
  # Whatever SkyPilot left running as the dedicated user (skylet, job steps): by process id.
  for sig in TERM KILL; do
    pids=$(ps -o pid= -u "$LOGIN_USER" || true)
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -s "$sig" $pids 2>/dev/null || true
    sleep 1
  done
  # What it left in /tmp: SkyPilot's uv cache and runtime directories, example data.
  find /tmp -mindepth 1 -maxdepth 1 -user "$LOGIN_USER" -exec rm -rf {} + 2>/dev/null || true
  userdel -r "$LOGIN_USER" 2>/dev/null || userdel "$LOGIN_USER" || true
fi
if grep -qs "deploy/local-slurm/up.sh" /etc/slurm/slurm.conf; then
  rm -f /etc/slurm/slurm.conf
fi
if [ -f "$SLURM_CONFIG" ] && grep -q "^# skyrun local-slurm" "$SLURM_CONFIG"; then
  awk '/^# skyrun local-slurm/ {skip=1; next}
       skip && /^Host[[:space:]]/ && !seen {seen=1; next}
       skip && (/^[[:space:]]*$/ || /^Host[[:space:]]/ || /^#/) {skip=0; seen=0}
       !skip {print}' "$SLURM_CONFIG" > "$SLURM_CONFIG.tmp"
  mv "$SLURM_CONFIG.tmp" "$SLURM_CONFIG"
  if ! grep -q '[^[:space:]]' "$SLURM_CONFIG"; then
    rm -f "$SLURM_CONFIG"
    rmdir "$(dirname "$SLURM_CONFIG")" 2>/dev/null || true
  fi
fi
rm -rf "$STATE"
say "down"
