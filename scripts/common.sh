# Helpers for the check scripts (sourced, not run).

# show_log LOG: the end of a failed build's or run's log, indented, and the disk's free
# space, so a CI record that keeps only the scripts' output still says why (a full disk
# fails a build as plainly as a compile error does).
show_log() {
  echo "  | last lines of $1:"
  tail -n 15 "$1" 2>/dev/null | cut -c1-200 | sed 's/^/  | /'
  echo "  | disk: $(df -h . | awk 'NR == 2 {print $4 " free of " $2}')"
}

# drop_build DIR: in CI, remove a planted-bug build once its check is done. Each such build
# has its own --cfg, so nothing reuses it, and keeping every one of them would take some
# gigabytes more of a disk that other jobs share. Kept locally, where a rerun reuses it.
drop_build() {
  if [ "${CI:-}" = true ]; then rm -rf "$1"; fi
}
