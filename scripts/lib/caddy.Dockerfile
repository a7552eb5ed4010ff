# caddy:2 for machines that cannot pull: Debian's caddy binary (package caddy) and
# the shared libraries it links, on busybox:latest. Built by scripts/setup-host,
# which copies them into root/ of the build context. Like the official image: the
# config in /etc/caddy/Caddyfile, state under /config and /data.
FROM busybox:latest
COPY root/ /
RUN mkdir -p /etc/caddy /config /data /srv
ENV XDG_CONFIG_HOME=/config XDG_DATA_HOME=/data
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
