#!/usr/bin/env bash
# Installs stpmd as a systemd service on a Jetson (JetPack 5/6, Ubuntu) or any Debian/Ubuntu edge box.
# Run from a checkout as root:  sudo deploy/jetson/install.sh
set -euo pipefail
PREFIX=/opt/stpmd
SRC="$(cd "$(dirname "$0")/../.." && pwd)"

if [[ $EUID -ne 0 ]]; then echo "install.sh: run as root (sudo)" >&2; exit 2; fi
command -v node >/dev/null || { echo "install.sh: Node.js 20+ is required (e.g. from NodeSource)" >&2; exit 2; }

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq build-essential pkg-config \
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-tools \
  gstreamer1.0-libav mosquitto-clients

id stpmd >/dev/null 2>&1 || useradd --system --home-dir /var/lib/stpmd --shell /usr/sbin/nologin stpmd
usermod -aG video stpmd
getent group render >/dev/null && usermod -aG render stpmd

mkdir -p "$PREFIX" /etc/stpmd /var/lib/stpmd/models /var/lib/stpmd/frames /var/lib/stpmd/outbox
rsync -a --delete --exclude node_modules --exclude dist --exclude .git "$SRC"/ "$PREFIX"/
(cd "$PREFIX" && npm ci --no-audit --no-fund && npm run build)
[[ -f /etc/stpmd/stpmd.yaml ]] || cp "$PREFIX/config/example.yaml" /etc/stpmd/stpmd.yaml
chown -R stpmd:stpmd /var/lib/stpmd

install -m 0644 "$PREFIX/deploy/jetson/stpmd.service" /etc/systemd/system/stpmd.service
systemctl daemon-reload
node "$PREFIX/dist/src/main.cjs" check-config /etc/stpmd/stpmd.yaml || {
  echo "install.sh: edit /etc/stpmd/stpmd.yaml, then: systemctl enable --now stpmd" >&2; exit 1; }
systemctl enable --now stpmd
systemctl --no-pager status stpmd | head -5
