#!/usr/bin/env bash
# Build and install the Watchkeeper packages on this host (as root):
#   scripts/install.sh [--config FILE] [wk-agent] [wk-alerter]
# Builds the .deb packages (scripts/package, release) and installs them with dpkg: the programs
# in /usr/bin, the hardened systemd units, the default configs in /etc/watchkeeper (kept on
# upgrade), state in /var/lib (docs/packaging.md). --config FILE replaces the agent's config,
# after validating it. Then enables and starts the services when systemd is running.
set -euo pipefail
cd "$(dirname "$0")/.."
config=""
packages=()
while (($#)); do
  case $1 in
    --config) config=$2; shift 2 ;;
    wk-agent|wk-alerter) packages+=("$1"); shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "install: unknown option $1" >&2; exit 1 ;;
  esac
done
((${#packages[@]})) || packages=(wk-agent)
[[ $(id -u) -eq 0 ]] || { echo "install: run as root" >&2; exit 1; }

mapfile -t debs < <(scripts/package "${packages[@]}")
dpkg -i "${debs[@]}"
if [[ -n $config ]]; then
  wk-agent --config "$config" --test --quiet >/dev/null
  install -m 0644 "$config" /etc/watchkeeper/wk-agent.conf
fi
if [[ -d /run/systemd/system ]]; then
  systemctl enable --now "${packages[@]}"
  echo "install: ${packages[*]} installed and started (journalctl -u ${packages[0]})"
else
  echo "install: ${packages[*]} installed; systemd is not running here, start with e.g.:"
  echo "  wk-agent --config /etc/watchkeeper/wk-agent.conf"
fi
