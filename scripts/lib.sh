# Shared by the scripts in this directory: installs what they need on a fresh machine.
# shellcheck shell=bash

# The runtime the tests and the local start use when there is no `spin`: the newest
# wasmtime that serves the same wasi:http 0.3 release candidate as Spin 4
# (0.3.0-rc-2026-03-15; wasmtime 46 and later serve only 0.3.0 final).
WASMTIME_VERSION=45.0.3
# Only what `wasmtime serve` needs: about half the build time of the defaults.
WASMTIME_FEATURES=run,serve,cranelift,parallel-compilation,pooling-allocator,cache,logging,component-model,component-model-async
# How wasmtime serves the web tier; the same flags as e2e's WASMTIME_SERVE_FLAGS.
WASMTIME_SERVE_FLAGS=(-Wcomponent-model-async -Sp3 -Scli -Opooling-memory-keep-resident=262144 -Opooling-table-keep-resident=65536)
# How `spin up` serves the web tier; the same as e2e's SPIN_ENV. One Tokio worker
# thread: on two, Spin 4.0.2's server often writes a response's head before the
# body has crossed from the instance, and the body then waits 40 ms for the
# client's delayed ACK (Spin sets no TCP_NODELAY). See "The web component".
SPIN_UP_ENV=(TOKIO_WORKER_THREADS=1)
TOOLS_DIR=${AWESOME_COUNTER_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/awesome-counter}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_wasm_target() {
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        say "Adding the wasm32-wasip2 Rust target"
        rustup target add wasm32-wasip2
    fi
}

# Sets WASMTIME to a wasmtime $WASMTIME_VERSION binary, building it once into
# $TOOLS_DIR if none is on PATH (15-30 minutes on two cores; cached afterwards).
ensure_wasmtime() {
    if command -v wasmtime >/dev/null && [ "$(wasmtime --version 2>/dev/null)" = "wasmtime $WASMTIME_VERSION" ]; then
        WASMTIME=$(command -v wasmtime)
        return
    fi
    WASMTIME="$TOOLS_DIR/wasmtime-$WASMTIME_VERSION/bin/wasmtime"
    if [ ! -x "$WASMTIME" ]; then
        say "Building wasmtime-cli $WASMTIME_VERSION into $TOOLS_DIR (once; 15-30 minutes)"
        cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked \
            --no-default-features --features "$WASMTIME_FEATURES" \
            --root "$TOOLS_DIR/wasmtime-$WASMTIME_VERSION" \
            --target-dir "$TOOLS_DIR/wasmtime-build"
        rm -rf "$TOOLS_DIR/wasmtime-build"
    fi
    export WASMTIME
}

build_counter() {
    ensure_wasm_target
    say "Building the gateway and the web component"
    cargo build --release --locked -p aerospike-gateway
    cargo build --release --locked --target wasm32-wasip2 -p awesome-counter
}

TARGET_DIR=${CARGO_TARGET_DIR:-target}
COMPONENT_WASM=$TARGET_DIR/wasm32-wasip2/release/awesome_counter.wasm
GATEWAY_BIN=$TARGET_DIR/release/aerospike-gateway

# Polls a URL until it answers 200, for up to 60 s, while process $2 runs. Uses the
# gateway's own health probe, so no curl is needed.
wait_for() {
    local url=$1 pid=$2 tries=600
    until "$GATEWAY_BIN" check-health --url "$url" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the process that should answer $url has exited" >&2
            return 1
        fi
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            echo "$url did not come up within 60 s" >&2
            return 1
        fi
        sleep 0.1
    done
}

# A Python with the tutorial app's packages (flask, gunicorn, aerospike), for the
# benchmark's baseline and the Aerospike layout test. Sets PYTHON.
ensure_python() {
    local venv="$TOOLS_DIR/python" requirements=bench/tutorial/requirements.txt
    if ! cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
        say "Installing $(tr '\n' ' ' < "$requirements")into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet -r "$requirements"
        cp "$requirements" "$venv/requirements.txt"
    fi
    PYTHON="$venv/bin/python"
}

# Debian's HAProxy, for the load balancer image of the container tests, and the
# openssl CLI, which makes their certificate and tries old TLS versions on it.
ensure_haproxy() {
    local missing=()
    command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    command -v openssl >/dev/null || missing+=(openssl)
    if [ ${#missing[@]} -gt 0 ]; then
        say "Installing Debian's ${missing[*]} for the container tests"
        $(command -v sudo || true) apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
            || { $(command -v sudo || true) apt-get update >/dev/null && $(command -v sudo || true) apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
    fi
}

# An Aerospike CE server binary for the tests: $AEROSPIKE_ASD, else `asd` on PATH,
# else the newest $TOOLS_DIR/aerospike-*/bin/asd. Install it the official way
# (Aerospike's packages or a build of aerospike/aerospike-server); the scripts
# never build it. Sets ASD, or fails.
find_asd() {
    if [ -n "${AEROSPIKE_ASD:-}" ]; then
        ASD=$AEROSPIKE_ASD
    elif command -v asd >/dev/null; then
        ASD=$(command -v asd)
    else
        ASD=$(ls -d "$TOOLS_DIR"/aerospike-*/bin/asd 2>/dev/null | sort -V | tail -n1)
    fi
    [ -n "$ASD" ] && [ -x "$ASD" ]
}

# Starts a throwaway single Aerospike node on free loopback ports, configured by
# the deployment's own entrypoint and aerospike.conf, and sets AEROSPIKE_HOSTS to
# it. stop_local_aerospike (run it from an EXIT trap) stops it and removes its
# data, pass or fail.
start_local_aerospike() {
    AEROSPIKE_LOCAL_DIR=$(mktemp -d "${TMPDIR:-/tmp}/awesome-counter-aerospike.XXXXXX")
    local base
    base=$(python3 - <<'PY'
import random, socket
# Four consecutive free ports: service, fabric, heartbeat, admin.
while True:
    base = random.randrange(20000, 60000, 4)
    try:
        for port in range(base, base + 4):
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        print(base)
        break
    except OSError:
        pass
PY
)
    say "Starting a throwaway Aerospike node ($ASD) on 127.0.0.1:$base"
    AEROSPIKE_ACCESS_ADDRESS=127.0.0.1 AEROSPIKE_SERVICE_ADDRESS=127.0.0.1 \
        AEROSPIKE_HEARTBEAT_ADDRESS=127.0.0.1 AEROSPIKE_FABRIC_ADDRESS=127.0.0.1 \
        AEROSPIKE_SERVICE_PORT=$base AEROSPIKE_FABRIC_PORT=$((base + 1)) \
        AEROSPIKE_HEARTBEAT_PORT=$((base + 2)) AEROSPIKE_ADMIN_PORT=$((base + 3)) \
        AEROSPIKE_SEED_NAME=no-peers.invalid AEROSPIKE_REPLICATION_FACTOR=1 \
        AEROSPIKE_CONF=$AEROSPIKE_LOCAL_DIR/aerospike.conf \
        AEROSPIKE_WORK_DIR=$AEROSPIKE_LOCAL_DIR/work \
        AEROSPIKE_STORAGE_FILE=$AEROSPIKE_LOCAL_DIR/test.dat AEROSPIKE_STORAGE_SIZE=2G \
        ASD=$ASD ASINFO=true \
        setsid deploy/aerospike/entrypoint.sh >"$AEROSPIKE_LOCAL_DIR/node.log" 2>&1 &
    AEROSPIKE_LOCAL_PID=$!
    local tries=300
    until (exec 3<>"/dev/tcp/127.0.0.1/$base") 2>/dev/null; do
        if ! kill -0 "$AEROSPIKE_LOCAL_PID" 2>/dev/null || [ $((tries -= 1)) -le 0 ]; then
            tail -n 30 "$AEROSPIKE_LOCAL_DIR/node.log" >&2
            echo "the local Aerospike node did not start" >&2
            return 1
        fi
        sleep 0.1
    done
    export AEROSPIKE_HOSTS=127.0.0.1:$base
}

stop_local_aerospike() {
    if [ -n "${AEROSPIKE_LOCAL_PID:-}" ]; then
        kill -TERM "$AEROSPIKE_LOCAL_PID" 2>/dev/null || true
        wait "$AEROSPIKE_LOCAL_PID" 2>/dev/null || true
        AEROSPIKE_LOCAL_PID=
    fi
    if [ -n "${AEROSPIKE_LOCAL_DIR:-}" ]; then
        rm -rf "$AEROSPIKE_LOCAL_DIR"
        AEROSPIKE_LOCAL_DIR=
    fi
}

# A Spin CLI for the Spin runs of the tests and for scripts/start: $SPIN, else
# `spin` on PATH, else the newest $TOOLS_DIR/spin-*/bin/spin. Install Spin the
# official way (spinframework.dev); the scripts never build it. Sets SPIN, or fails.
find_spin() {
    if [ -n "${SPIN:-}" ]; then
        :
    elif command -v spin >/dev/null; then
        SPIN=$(command -v spin)
    else
        SPIN=$(ls -d "$TOOLS_DIR"/spin-*/bin/spin 2>/dev/null | sort -V | tail -n1)
    fi
    [ -n "$SPIN" ] && [ -x "$SPIN" ] && "$SPIN" --version >/dev/null 2>&1
}
