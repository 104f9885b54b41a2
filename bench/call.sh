# Sourced first by every bench/*.sh device call, after setting CALL (the folder name) and optionally
# WATCHDOG_S. Everything the call writes goes under $OUT and comes back as one archive, $CALL.tgz.
# The device tool stops a command at its time limit: the watchdog archives whatever exists by then
# (partial.tgz). The call lasts until every process holding its output ends, so finish_call stops the
# watchdog (or the call would wait for it).
FINAL=${OUT:-/tmp/out}; OUT=$FINAL/$CALL; mkdir -p "$OUT"
( sleep "${WATCHDOG_S:-575}" && tar czf "$FINAL/partial.tgz" -C "$FINAL" "$CALL" 2>/dev/null ) & WATCHDOG=$!
STARTED=$(date +%s)
lap() { echo "$1 after $(( $(date +%s) - STARTED )) s" >> "$OUT/times.txt"; }
finish_call() {
  tar czf "$FINAL/$CALL.tgz" -C "$FINAL" "$CALL" && rm -rf "$OUT"
  pkill -P "$WATCHDOG" 2>/dev/null; kill "$WATCHDOG" 2>/dev/null
  echo "=== done $(date +%T)"
}
