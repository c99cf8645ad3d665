# Sourced by the scripts: one build cache outside the clone, kept between runs, so
# RocksDB's C++ build (about 20 minutes on 2 cores) happens once per machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/goroscope/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
BIN="$CARGO_TARGET_DIR/debug"
