# Sourced by the scripts: loads .env (or the file in DOTENV_FILE) the way dotenv tools do:
# a variable already in the environment keeps its value; .env only fills in the rest.
# Source it at the top level of a script (not inside a function), after `cd` to the repo root.
__dotenv_file="${DOTENV_FILE:-.env}"
# `.` looks a name without a slash up in PATH first.
case "$__dotenv_file" in */*) ;; *) __dotenv_file="./$__dotenv_file" ;; esac
if [ -f "$__dotenv_file" ]; then
  __dotenv_saved="$(export -p)"
  set -a
  # shellcheck disable=SC1090
  . "$__dotenv_file"
  set +a
  # Readonly variables (SHELLOPTS, if exported) cannot be declared again; they never change.
  eval "$__dotenv_saved" 2>/dev/null || true
  unset __dotenv_saved
fi
unset __dotenv_file
