#!/bin/sh
# The build image's `docker` (scripts/setup-host puts it in /usr/local/bin, first on PATH,
# when the host has a static docker CLI to carry): every command runs on that fast CLI
# (it starts in about 10 ms, Debian's 20.10 in 20-25 ms: its vendored Kubernetes client's
# package init), but for the builder's: `build`, `image build`, `builder` and `buildx`
# stay on Debian's 20.10 in /usr/bin, whose built-in BuildKit client runs
# `DOCKER_BUILDKIT=1 docker build` (a newer CLI needs the buildx plugin for that).
# The first word that is no global option (or an option's value) names the command;
# after `image`, the next one.
fast=/usr/local/libexec/stackyard/docker
value=
for word; do
  if [ -n "$value" ]; then value=; continue; fi
  case $word in
  --config|-c|--context|-H|--host|-l|--log-level|--tlscacert|--tlscert|--tlskey) value=1 ;;
  -*) ;;
  build|builder|buildx) exec /usr/bin/docker "$@" ;;
  image) ;;  # `image build`: the next word decides
  *) break ;;
  esac
done
exec "$fast" "$@"
