#!/usr/bin/env bash
# Deploy this host's wk-agent config from a git repository, safely:
#   pull → pick the host's file → validate with the agent → install atomically → reload.
# If validation fails the running config is left untouched and the script exits non-zero,
# printing the agent's errors (file:line:column).
#
# Usage: deploy-config.sh [options]
#   --repo DIR        config repository (default: /etc/watchkeeper/repo)
#   --host NAME       host whose file to deploy (default: `hostname -s`)
#   --file PATH       file inside the repo to deploy (default: first of NAME.conf, hosts/NAME.conf)
#   --target PATH     installed config (default: /etc/watchkeeper/wk-agent.conf)
#   --agent PATH      wk-agent binary (default: wk-agent on PATH)
#   --service NAME    systemd unit to reload (default: wk-agent, when systemctl can see it)
#   --pidfile PATH    reload by sending SIGHUP to the pid in this file instead of systemd
#   --no-pull         do not run git pull (deploy what is checked out)
#   --allow-gather-errors
#                     install even if the dry run's inputs report errors on this host
#                     (a config that does not load is never installed)
#
# Exit status: 0 deployed (or nothing changed), 1 git or install failure,
#              2 the new config is invalid (nothing installed), 3 reload failed.
set -euo pipefail

repo=/etc/watchkeeper/repo
host=$(hostname -s 2>/dev/null || uname -n)
file=""
target=/etc/watchkeeper/wk-agent.conf
agent=wk-agent
service=wk-agent
pidfile=""
pull=1
allow_gather_errors=0

die() { local code=$1; shift; echo "deploy-config: $*" >&2; exit "$code"; }

while (($#)); do
  case $1 in
    --repo) repo=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --file) file=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --agent) agent=$2; shift 2 ;;
    --service) service=$2; shift 2 ;;
    --pidfile) pidfile=$2; shift 2 ;;
    --no-pull) pull=0; shift ;;
    --allow-gather-errors) allow_gather_errors=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die 1 "unknown option $1 (see --help)" ;;
  esac
done

[[ -d $repo/.git ]] || die 1 "$repo is not a git repository"
if ((pull)); then
  git -C "$repo" pull --ff-only --quiet || die 1 "git pull failed in $repo (local changes or diverged history?)"
fi
rev=$(git -C "$repo" rev-parse --short HEAD)

if [[ -z $file ]]; then
  for candidate in "$host.conf" "hosts/$host.conf"; do
    if [[ -f $repo/$candidate ]]; then file=$candidate; break; fi
  done
  [[ -n $file ]] || die 1 "no config for host '$host' in $repo (looked for $host.conf and hosts/$host.conf; use --host or --file)"
fi
src=$repo/$file
[[ -f $src ]] || die 1 "$src does not exist"

if [[ -f $target ]] && cmp -s "$src" "$target"; then
  echo "deploy-config: $file at $rev is already installed; nothing to do"
  exit 0
fi

# Validate a private copy, so what is validated is exactly what gets installed.
dir=$(dirname "$target")
mkdir -p "$dir"
tmp=$(mktemp "$dir/.wk-agent.conf.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cp "$src" "$tmp"

errors=$(mktemp)
trap 'rm -f "$tmp" "$errors"' EXIT
set +e
"$agent" --config "$tmp" --test --quiet >/dev/null 2>"$errors"
status=$?
set -e
if ((status == 2)); then
  echo "deploy-config: $file at $rev is INVALID; the running config is kept:" >&2
  sed "s|$tmp|$file|g" "$errors" >&2
  exit 2
elif ((status != 0)); then
  if ((allow_gather_errors)); then
    echo "deploy-config: warning: inputs reported errors in the dry run (installing anyway):" >&2
    sed "s|$tmp|$file|g" "$errors" >&2
  else
    echo "deploy-config: $file at $rev loads, but its inputs fail on this host; the running config is kept" >&2
    echo "deploy-config: (use --allow-gather-errors to install anyway):" >&2
    sed "s|$tmp|$file|g" "$errors" >&2
    exit 2
  fi
fi

# Atomic install: rename within the target's directory, keeping the previous file.
[[ -f $target ]] && cp -p "$target" "$target.prev"
chmod 0644 "$tmp"
mv -f "$tmp" "$target" || die 1 "cannot install $target"
trap 'rm -f "$errors"' EXIT
echo "deploy-config: installed $file at $rev as $target"

if [[ -n $pidfile ]]; then
  [[ -f $pidfile ]] || die 3 "pidfile $pidfile not found: is wk-agent running?"
  pid=$(<"$pidfile")
  kill -HUP "$pid" 2>/dev/null || die 3 "cannot signal wk-agent (pid $pid)"
  echo "deploy-config: sent SIGHUP to wk-agent (pid $pid)"
elif command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
  systemctl reload "$service" || die 3 "systemctl reload $service failed"
  echo "deploy-config: reloaded $service"
else
  echo "deploy-config: $service is not running; the new config is used at its next start"
fi
