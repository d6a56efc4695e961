#!/bin/sh
# Where the image's bytes go (bench/README.md, "The image"). Run as root after
# ../shared/tools/image-build.sh, which builds localhost/kproxy:test; on machines where podman needs
# the engine settings that script writes, point CONTAINERS_CONF at them (its containers.conf).
# Sizes are du's (disk blocks, so a little above the image size podman reports).
set -eu
IMAGE=${1:-localhost/kproxy:test}
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"
podman run --rm --network none --entrypoint sh "$IMAGE" -c '
  kib() { du -skxc "$@" 2>/dev/null | tail -1 | cut -f1; }
  mb() { awk "BEGIN {printf \"%.1f MB\", $1 * 1024 / 1e6}"; }
  all=$(kib /); node=$(kib /usr/local/bin/node); mods=$(kib /opt/kproxy/node_modules)
  cn=$(kib /opt/kproxy/node_modules/@kubernetes/client-node); cache=$(kib /opt/kproxy/.compile-cache)
  own=$(kib /opt/kproxy/src /opt/kproxy/bin /usr/local/lib/kproxy)
  echo "whole file system: $(mb $all)"
  echo "Node.js binary: $(mb $node)"
  echo "production node_modules: $(mb $mods), of which client-node $(mb $cn)"
  echo "compile cache: $(mb $cache)"
  echo "kproxy (src, bin, image scripts): $(mb $own)"
  echo "the rest (Debian minbase, iptables, nftables, conntrack, iproute2): $(mb $((all - node - mods - cache - own)))"
'
