#!/usr/bin/env bash
# Deploy this host's Watchkeeper configs and rules from a git repository, safely
# (docs/deploy.md): pull → pick what is this host's → validate it with the programs
# themselves → install atomically → reload. What does not validate is refused: nothing of it
# is installed, the running config stays, the script exits 2 with the programs' errors
# (file:line:column) and, with --report-url, a `wk_deploy` point makes the refusal an alert.
#
# The repository holds, each part optional:
#   HOST.conf or hosts/HOST.conf          this host's wk-agent config
#   alerter/wk-alerter.conf               wk-alerter's config   (deployed where wk-alerter
#   alerter/rules/*.rhai                  wk-alerter's rules     is installed, or with --alerter)
#
# Usage: wk-deploy-config [options]        (installed by the wk-agent package; scripts/deploy-config.sh)
#   --repo DIR        config repository (default: /etc/watchkeeper/repo)
#   --host NAME       host whose file to deploy (default: `hostname -s`)
#   --file PATH       agent config inside the repo (default: first of NAME.conf, hosts/NAME.conf)
#   --target PATH     installed agent config (default: /etc/watchkeeper/wk-agent.conf)
#   --agent PATH      wk-agent binary (default: wk-agent on PATH)
#   --service NAME    agent's systemd unit to reload (default: wk-agent, when systemctl can see it)
#   --pidfile PATH    reload the agent by SIGHUP to the pid in this file instead of systemd
#   --alerter PATH    wk-alerter binary (default: wk-alerter on PATH; without one, the alerter
#                     part of the repository is not deployed)
#   --alerter-config PATH   installed alerter config (default: /etc/watchkeeper/wk-alerter.conf)
#   --rules-dir DIR   installed rules (default: /etc/watchkeeper/rules)
#   --alerter-service NAME  alerter's unit to reload (default: wk-alerter)
#   --alerter-pidfile PATH  reload the alerter by SIGHUP to the pid in this file instead
#   --report-url URL  write each part's result as line protocol to this InfluxDB-compatible
#                     /write URL (InfluxDB, or wk-alerter's stream listener); the token, if
#                     any, comes from $WK_DEPLOY_REPORT_TOKEN. Needs curl.
#   --no-pull         do not run git pull (deploy what is checked out)
#   --allow-gather-errors
#                     install an agent config even if the dry run's inputs report errors on
#                     this host (a config that does not load is never installed)
#
# Exit status: 0 deployed (or nothing changed), 1 git or install failure,
#              2 something pushed is invalid (none of that part installed), 3 reload failed.
set -euo pipefail

repo=/etc/watchkeeper/repo
host=$(hostname -s 2>/dev/null || uname -n)
file=""
target=/etc/watchkeeper/wk-agent.conf
agent=wk-agent
service=wk-agent
pidfile=""
alerter=""
alerter_config=/etc/watchkeeper/wk-alerter.conf
rules_dir=/etc/watchkeeper/rules
alerter_service=wk-alerter
alerter_pidfile=""
report_url=""
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
    --alerter) alerter=$2; shift 2 ;;
    --alerter-config) alerter_config=$2; shift 2 ;;
    --rules-dir) rules_dir=$2; shift 2 ;;
    --alerter-service) alerter_service=$2; shift 2 ;;
    --alerter-pidfile) alerter_pidfile=$2; shift 2 ;;
    --report-url) report_url=$2; shift 2 ;;
    --no-pull) pull=0; shift ;;
    --allow-gather-errors) allow_gather_errors=1; shift ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) die 1 "unknown option $1 (see --help)" ;;
  esac
done

[[ -d $repo/.git ]] || die 1 "$repo is not a git repository"
if ((pull)); then
  git -C "$repo" pull --ff-only --quiet || die 1 "git pull failed in $repo (local changes or diverged history?)"
fi
rev=$(git -C "$repo" rev-parse --short HEAD)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# report COMPONENT REFUSED: one `wk_deploy` point (docs/deploy.md); a report that cannot be
# sent is a warning, never a reason to undo a deploy.
report() {
  [[ -n $report_url ]] || return 0
  local lp=$work/report.lp
  printf 'wk_deploy,host=%s,component=%s refused=%di,rev="%s"\n' "$host" "$1" "$2" "$rev" > "$lp"
  local auth=()
  # The token goes through a header file, not argv (visible in ps).
  if [[ -n ${WK_DEPLOY_REPORT_TOKEN:-} ]]; then
    printf 'Authorization: Token %s\n' "$WK_DEPLOY_REPORT_TOKEN" > "$work/auth"
    auth=(-H "@$work/auth")
  fi
  curl -fsS --max-time 10 "${auth[@]}" --data-binary "@$lp" "$report_url" >/dev/null \
    || echo "deploy-config: warning: cannot report to $report_url" >&2
}

# reload NAME UNIT PIDFILE
reload() {
  local name=$1 unit=$2 pf=$3
  if [[ -n $pf ]]; then
    [[ -f $pf ]] || die 3 "pidfile $pf not found: is $name running?"
    local pid
    pid=$(<"$pf")
    kill -HUP "$pid" 2>/dev/null || die 3 "cannot signal $name (pid $pid)"
    echo "deploy-config: sent SIGHUP to $name (pid $pid)"
  elif command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
    systemctl reload "$unit" || die 3 "systemctl reload $unit failed"
    echo "deploy-config: reloaded $unit"
  else
    echo "deploy-config: $unit is not running; the new config is used at its next start"
  fi
}

# install_file SRC DEST: atomic rename within DEST's directory, keeping DEST.prev.
install_file() {
  local dir tmp
  dir=$(dirname "$2")
  mkdir -p "$dir"
  tmp=$(mktemp "$dir/.$(basename "$2").XXXXXX")
  cp "$1" "$tmp"
  chmod 0644 "$tmp"
  [[ -f $2 ]] && cp -p "$2" "$2.prev"
  mv -f "$tmp" "$2" || die 1 "cannot install $2"
}

status=0

# ---- wk-agent: this host's config ------------------------------------------------------
deploy_agent() {
  local src=$repo/$file
  [[ -f $src ]] || die 1 "$src does not exist"
  if [[ -f $target ]] && cmp -s "$src" "$target"; then
    echo "deploy-config: $file at $rev is already installed; nothing to do"
    report agent 0
    return 0
  fi
  # Validate a private copy, so what is validated is exactly what gets installed.
  local tmp=$work/agent.conf errors=$work/agent.err code=0
  cp "$src" "$tmp"
  # --require-outputs: the daemon's checks too (--test alone runs without outputs, and a
  # config the daemon refuses would be installed and keep the agent down at its next start).
  "$agent" --config "$tmp" --test --require-outputs --quiet >/dev/null 2>"$errors" || code=$?
  if ((code == 2)); then
    echo "deploy-config: $file at $rev is INVALID; the running config is kept:" >&2
    sed "s|$tmp|$file|g" "$errors" >&2
    report agent 1
    return 2
  elif ((code != 0)); then
    if ((allow_gather_errors)); then
      echo "deploy-config: warning: inputs reported errors in the dry run (installing anyway):" >&2
      sed "s|$tmp|$file|g" "$errors" >&2
    else
      echo "deploy-config: $file at $rev loads, but its inputs fail on this host; the running config is kept" >&2
      echo "deploy-config: (use --allow-gather-errors to install anyway):" >&2
      sed "s|$tmp|$file|g" "$errors" >&2
      report agent 1
      return 2
    fi
  fi
  install_file "$tmp" "$target"
  echo "deploy-config: installed $file at $rev as $target"
  report agent 0
  reload wk-agent "$service" "$pidfile"
}

# ---- wk-alerter: its config and the rules, validated together --------------------------
deploy_alerter() {
  local conf_src=$repo/alerter/wk-alerter.conf rules_src=$repo/alerter/rules
  local stage=$work/alerter errors=$work/alerter.err
  mkdir -p "$stage/rules"
  if [[ -d $rules_src ]]; then
    find "$rules_src" -maxdepth 1 -name '*.rhai' -type f -exec cp -t "$stage/rules" {} +
  fi
  local conf=$alerter_config
  [[ -f $conf_src ]] && { cp "$conf_src" "$stage/wk-alerter.conf"; conf=$stage/wk-alerter.conf; }
  # Nothing changed: the same config and the same set of rule files with the same content.
  local same=1
  [[ -f $conf_src ]] && ! cmp -s "$conf_src" "$alerter_config" && same=0
  if [[ -d $rules_src ]] && ! diff -rq --exclude='.*' --exclude='*.prev' "$stage/rules" "$rules_dir" >/dev/null 2>&1; then
    same=0
  fi
  if ((same)); then
    echo "deploy-config: alerter config and rules at $rev are already installed; nothing to do"
    report alerter 0
    return 0
  fi
  local rules=("$stage"/rules/*.rhai)
  [[ -e ${rules[0]} ]] || rules=()
  local code=0
  if ((${#rules[@]})); then
    "$alerter" --config "$conf" check --no-eval "${rules[@]}" >"$errors" 2>&1 || code=$?
  else
    # No rules in the repository: check the config alone against the installed rules.
    "$alerter" --config "$conf" check --no-eval >"$errors" 2>&1 || code=$?
  fi
  if ((code != 0)); then
    echo "deploy-config: the alerter config or rules at $rev are INVALID; the running ones are kept:" >&2
    sed -e "s|$stage/rules/|alerter/rules/|g" -e "s|$stage/|alerter/|g" "$errors" >&2
    report alerter 1
    return 2
  fi
  [[ -f $conf_src ]] && install_file "$stage/wk-alerter.conf" "$alerter_config"
  if [[ -d $rules_src ]]; then
    mkdir -p "$rules_dir"
    local r
    for r in "${rules[@]}"; do
      cmp -s "$r" "$rules_dir/$(basename "$r")" || install_file "$r" "$rules_dir/$(basename "$r")"
    done
    # Rules deleted from git are deleted here (kept as NAME.rhai.prev).
    for r in "$rules_dir"/*.rhai; do
      [[ -e $r && ! -e $stage/rules/$(basename "$r") ]] && mv -f "$r" "$r.prev"
    done
  fi
  echo "deploy-config: installed the alerter config and rules at $rev"
  report alerter 0
  reload wk-alerter "$alerter_service" "$alerter_pidfile"
}

if [[ -z $file ]]; then
  for candidate in "$host.conf" "hosts/$host.conf"; do
    if [[ -f $repo/$candidate ]]; then file=$candidate; break; fi
  done
fi
if [[ -z $alerter ]] && command -v wk-alerter >/dev/null; then alerter=wk-alerter; fi
has_alerter_part=0
[[ -n $alerter && ( -d $repo/alerter/rules || -f $repo/alerter/wk-alerter.conf ) ]] && has_alerter_part=1
if [[ -z $file ]] && ((!has_alerter_part)); then
  die 1 "nothing for host '$host' in $repo (looked for $host.conf, hosts/$host.conf and, with wk-alerter installed, alerter/; use --host or --file)"
fi

if [[ -n $file ]]; then deploy_agent || status=$?; fi
if ((has_alerter_part)); then deploy_alerter || status=$?; fi
exit "$status"
