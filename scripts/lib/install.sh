# shellcheck shell=bash
# Shared by scripts/setup.sh and scripts/validate-deploy.sh (sourced, not run): installing
# Debian packages and cached virtualenvs, once. Needs scripts/env.sh sourced first.

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
# apt_install PACKAGE...: without recommends, so that docker-compose does not bring Docker.
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# cached_venv DIR PIP-ARGS...: a virtualenv in DIR with the packages installed, made once; a
# marker written last tells a finished install from one that was cut short.
cached_venv() {
  local dir="$1"
  shift
  [ -f "$dir/.strata-complete" ] && return 0
  # Debian splits venv support (ensurepip) into python3-venv.
  python3 -c "import ensurepip, venv" >/dev/null 2>&1 || apt_install python3-venv
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  touch "$dir/.strata-complete"
}
