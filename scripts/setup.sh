#!/usr/bin/env bash
# Installs what nanovnf needs on a Debian 12 machine and is a no-op when all is there:
# the pinned Rust toolchain with the x86_64-unknown-none target, QEMU, iproute2 and the
# real clients the end-to-end tests and benchmarks drive. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  qemu-system-x86   # runs the appliances
  iproute2          # namespaces, bridges, taps in tests
  iputils-ping      # ping from instance namespaces
  busybox           # udhcpc (DHCP client)
  isc-dhcp-client   # dhclient
  dhcpcd5           # dhcpcd
  iperf3            # throughput benchmarks
  tcpdump           # captures in tests
  dnsmasq-base      # dnsmasq as Neutron runs it: the DHCP benchmark's baseline (no service)
  bind9-dnsutils    # dig: DNS queries from instance namespaces in tests
  dnsperf           # DNS load generator of the DNS benchmark
  curl              # fetches the metadata tree from instance namespaces
  cloud-init        # cloud-init's own metadata readers (its Python modules; no service runs)
  wrk               # HTTP load for the metadata benchmark
  haproxy           # Neutron's metadata proxy: the metadata benchmark's baseline (no service)
  iptables          # MASQUERADE in the Linux namespace router: the router benchmark's baseline
  traceroute        # the router hop, as Tempest checks it
  ethtool           # offloads on and off in the forwarding benchmarks
  socat             # TCP and UDP servers and clients in the router tests
)

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs Debian packages and the tests create namespaces)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v rustup >/dev/null; then
  echo "setup: rustup is missing; install Rust from https://rustup.rs first" >&2
  exit 1
fi
# rust-toolchain.toml pins the toolchain; make sure it and the bare-metal target exist.
rustup toolchain install >/dev/null 2>&1 || rustup show active-toolchain >/dev/null
rustup target add x86_64-unknown-none >/dev/null 2>&1

[ -e /dev/net/tun ] || modprobe tun || { echo "setup: /dev/net/tun is missing: load it with 'modprobe tun'" >&2; exit 1; }
echo "setup: ready ($(qemu-system-x86_64 --version | head -1); $(rustc --version))"
