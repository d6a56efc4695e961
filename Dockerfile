# kproxy's image: Node.js 24 on Debian bookworm with iptables (both backends), nftables and
# conntrack. `kproxy` (and `kube-proxy`, for a drop-in image swap) pick the host's iptables
# backend at start, as upstream's image does.
FROM node:24-bookworm-slim AS build
WORKDIR /opt/kproxy
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force

FROM node:24-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables conntrack iproute2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kproxy
COPY --from=build /opt/kproxy/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY image/iptables-mode /usr/local/lib/kproxy/iptables-mode
COPY image/kproxy image/kube-proxy /usr/local/bin/
COPY image/iptables-shim /usr/local/lib/kproxy/iptables-shim
RUN for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do \
      ln -s /usr/local/lib/kproxy/iptables-shim "/usr/local/sbin/$t"; \
    done \
 # The smoke test names the backend: detection reads the kernel's tables, which is for run time, not build time.
 && KPROXY_IPTABLES_MODE=nft /usr/local/bin/kproxy --help >/dev/null
ENTRYPOINT ["/usr/local/bin/kproxy"]
CMD ["run"]
