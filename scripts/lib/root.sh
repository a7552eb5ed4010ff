# Sourced by the scripts that set up this machine (demo, test, setup-host): they install
# packages and start dockerd, so they run as root. As root, nothing happens. Otherwise the
# script is run again through sudo when there is one, keeping the STACKYARD_* settings;
# without sudo it stops and says how to become root. The README's commands work as
# written for root (no sudo needed, none installed on a fresh VM) and for a sudo user.
#
# Usage, first thing in a script:  . "$(dirname "$0")/lib/root.sh"; run_as_root "$0" "$@"

run_as_root() {
    local script=$1
    shift
    ((EUID == 0)) && return 0
    local name
    name=$(basename "$script")
    if [[ -n ${STACKYARD_ROOT_TRIED:-} ]]; then
        printf '%s: still not root after sudo (uid %s); run it as root\n' "$name" "$EUID" >&2
        exit 1
    fi
    if ! command -v sudo >/dev/null 2>&1; then
        printf '%s: must run as root: it installs packages and starts dockerd.\n' "$name" >&2
        printf '%s: there is no sudo here; become root (su -) and run it again.\n' "$name" >&2
        exit 1
    fi
    local path keep=(STACKYARD_ROOT_TRIED=1) variable
    path="$(cd "$(dirname "$script")" && pwd)/$(basename "$script")"
    while IFS= read -r variable; do
        keep+=("$variable=${!variable}")
    done < <(compgen -e | grep -E '^STACKYARD_' || true)
    printf '%s: must run as root (it installs packages and starts dockerd): ' "$name" >&2
    printf 'running it again with sudo\n' >&2
    exec sudo env "${keep[@]}" "$path" "$@"
}
