#!/usr/bin/env bash
# Build and install wk-agent on this host (as root):
#   scripts/install.sh [--config FILE]
# Installs /usr/local/bin/wk-agent, /etc/watchkeeper/wk-agent.conf (only if absent; from FILE or
# examples/agent/web-server.conf), the systemd unit, and a wk-agent system user; then enables
# and starts the service when systemd is running.
set -euo pipefail
cd "$(dirname "$0")/.."
config=examples/agent/web-server.conf
while (($#)); do
  case $1 in
    --config) config=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "install: unknown option $1" >&2; exit 1 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "install: run as root" >&2; exit 1; }

cargo build --release --locked -p wk-agent
install -m 0755 target/release/wk-agent /usr/local/bin/wk-agent
install -m 0755 scripts/deploy-config.sh /usr/local/bin/wk-deploy-config
install -d -m 0755 /etc/watchkeeper /usr/local/share/doc/watchkeeper
install -m 0644 README.md /usr/local/share/doc/watchkeeper/README.md
if [[ ! -f /etc/watchkeeper/wk-agent.conf ]]; then
  /usr/local/bin/wk-agent --config "$config" --test --quiet >/dev/null
  install -m 0644 "$config" /etc/watchkeeper/wk-agent.conf
fi
[[ -f /etc/default/wk-agent ]] || install -m 0600 /dev/null /etc/default/wk-agent
id wk-agent >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin wk-agent
install -m 0644 scripts/wk-agent.service /etc/systemd/system/wk-agent.service
if [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable --now wk-agent
  echo "install: wk-agent installed and started (journalctl -u wk-agent)"
else
  echo "install: wk-agent installed; systemd is not running here, start it with:"
  echo "  /usr/local/bin/wk-agent --config /etc/watchkeeper/wk-agent.conf"
fi
