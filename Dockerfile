# kproxy's image: Node.js 24 on Debian bookworm with iptables (both backends), nftables and
# conntrack. `kproxy` (and `kube-proxy`, for a drop-in image swap) pick the host's iptables
# backend at start, as upstream's image does.
#
# Size (bench/README.md, "The image"): the final image is one layer copied from a trimmed root
# file system, without npm, Node's C headers, apt's lists, docs, man pages and locales, and with
# the production dependencies only, stripped of source maps and type declarations. The base is
# pinned by version; bump it deliberately.
FROM node:24.22.3-bookworm-slim AS build
WORKDIR /opt/kproxy
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force \
 && find node_modules -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o \( -name '*.md' ! -iname 'license*' \) \) -delete \
 # Bare-runtime native modules (tar-fs's alternative to node:fs, never loaded by Node) and a test suite.
 && rm -rf node_modules/bare-*/prebuilds node_modules/bintrees/test
COPY bin ./bin
COPY src ./src
COPY examples /tmp/examples
# Node's compile cache (bin/kproxy reads it at run time, read-only), filled here through bin/kproxy
# itself so the V8 flags match: both dry-runs, and a `run` that loads every module of the agent
# and stops at the missing kubeconfig. A file command then starts without compiling anything.
RUN bin/kproxy dry-run --from /tmp/examples --hostname-override node-1 >/dev/null 2>&1 \
 && bin/kproxy dry-run --proxy-mode nftables --from /tmp/examples --hostname-override node-1 >/dev/null 2>&1 \
 && ! bin/kproxy run --kubeconfig /nonexistent --healthz-bind-address '' --metrics-bind-address '' >/dev/null 2>&1 \
 && test -n "$(ls .compile-cache)"

FROM node:24.22.3-bookworm-slim AS rootfs
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables conntrack iproute2 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/* \
      /usr/local/lib/node_modules /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /usr/local/include \
      /usr/local/share/doc /usr/local/share/man /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale /usr/share/lintian \
      /usr/share/zoneinfo/right \
 # Nothing in the image converts character sets (glibc's gconv modules) or runs Perl (only dpkg's
 # maintainer scripts would, and no package is installed at run time).
 && rm -rf /usr/lib/x86_64-linux-gnu/gconv /usr/lib/x86_64-linux-gnu/perl-base /usr/bin/perl /usr/bin/perl5*
COPY --from=build /opt/kproxy /opt/kproxy
COPY image/iptables-mode /usr/local/lib/kproxy/iptables-mode
COPY image/kproxy image/kube-proxy /usr/local/bin/
COPY image/iptables-shim /usr/local/lib/kproxy/iptables-shim
RUN for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do \
      ln -s /usr/local/lib/kproxy/iptables-shim "/usr/local/sbin/$t"; \
    done \
 # The smoke test names the backend: detection reads the kernel's tables, which is for run time, not build time.
 && KPROXY_IPTABLES_MODE=nft /usr/local/bin/kproxy --help >/dev/null

# One layer: what the rootfs stage deleted is not carried underneath in the base's layers.
FROM scratch
COPY --from=rootfs / /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin NODE_VERSION=24.22.3
ENTRYPOINT ["/usr/local/bin/kproxy"]
CMD ["run"]
