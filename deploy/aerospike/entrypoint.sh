#!/usr/bin/env bash
# Starts one Aerospike node of the awesome-counter cluster and keeps its mesh
# heartbeat seeded from DNS, so a Docker Swarm service (endpoint_mode dnsrr,
# one task per node) forms and grows its cluster without anyone typing `tip`.
# The same script runs the single-node docker compose dev setup, where the
# seed name resolves only to the container itself.
#
#   1. find this task's IP: the local address that also appears among the A
#      records of the seed name (tasks.<service> in Swarm);
#   2. render aerospike.conf (the template beside this script) with that IP as
#      access-address and one mesh seed per OTHER address of the seed name;
#   3. run asd in the foreground, forwarding SIGTERM/SIGINT so it shuts down
#      cleanly;
#   4. meanwhile re-resolve the seed name every few seconds and `tip` the
#      local node about addresses it does not have as seeds yet (tasks that
#      started at the same moment and saw no peers, tasks added later), and
#      drop seeds whose task left DNS (Swarm gives a new task a new IP).
#
# Environment (defaults in brackets):
#   ASD [/usr/bin/asd]   ASINFO [asinfo]   asd binary and asinfo command
#   AEROSPIKE_CONF_TEMPLATE [aerospike.conf beside this script]
#   AEROSPIKE_CONF [/etc/aerospike/aerospike.conf]   rendered config
#   AEROSPIKE_SEED_NAME [tasks.aerospike]   DNS name listing all tasks
#   AEROSPIKE_SEED_INTERVAL [5]   seconds between DNS checks
#   AEROSPIKE_SELF_WAIT [10]   seconds to wait for own IP to appear in DNS
#   AEROSPIKE_PRUNE_SEEDS [true]   tip-clear seeds that left DNS
#   AEROSPIKE_ACCESS_ADDRESS [detected]   this node's IP, skips detection
#   AEROSPIKE_SERVICE_ADDRESS [any]   AEROSPIKE_ADMIN_ADDRESS [= service]
#   AEROSPIKE_HEARTBEAT_ADDRESS [self]   AEROSPIKE_FABRIC_ADDRESS [self]
#       bind addresses: `any`, `self` (the detected IP) or an IP
#   AEROSPIKE_SERVICE_PORT [3000]   AEROSPIKE_FABRIC_PORT [3001]
#   AEROSPIKE_HEARTBEAT_PORT [3002]   AEROSPIKE_ADMIN_PORT [3003] (info)
#   AEROSPIKE_CLUSTER_NAME [awesome-counter]   AEROSPIKE_NODE_ID [derived]
#   AEROSPIKE_REPLICATION_FACTOR (or REPLICATION_FACTOR) [2]
#   AEROSPIKE_STORAGE_FILE [/opt/aerospike/data/test.dat]
#   AEROSPIKE_STORAGE_SIZE [4G]
#   AEROSPIKE_WORK_DIR [/opt/aerospike/data/work]
set -euo pipefail

ASD=${ASD:-/usr/bin/asd}
ASINFO=${ASINFO:-asinfo}
TEMPLATE=${AEROSPIKE_CONF_TEMPLATE:-$(dirname "${BASH_SOURCE[0]}")/aerospike.conf}
CONF=${AEROSPIKE_CONF:-/etc/aerospike/aerospike.conf}
SEED_NAME=${AEROSPIKE_SEED_NAME:-tasks.aerospike}
SEED_INTERVAL=${AEROSPIKE_SEED_INTERVAL:-5}
SELF_WAIT=${AEROSPIKE_SELF_WAIT:-10}
PRUNE_SEEDS=${AEROSPIKE_PRUNE_SEEDS:-true}
SERVICE_PORT=${AEROSPIKE_SERVICE_PORT:-3000}
FABRIC_PORT=${AEROSPIKE_FABRIC_PORT:-3001}
HEARTBEAT_PORT=${AEROSPIKE_HEARTBEAT_PORT:-3002}
WORK_DIR=${AEROSPIKE_WORK_DIR:-/opt/aerospike/data/work}
STORAGE_FILE=${AEROSPIKE_STORAGE_FILE:-/opt/aerospike/data/test.dat}

log() { printf '%s entrypoint: %s\n' "$(date -u +%FT%TZ)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# IPv4 addresses of the seed name, one per line, in DNS order, no duplicates.
# Empty (not an error) while the name does not resolve.
resolve_seed_name() {
	getent ahostsv4 "$SEED_NAME" 2>/dev/null | awk '!seen[$1]++ { print $1 }' || true
}

# IPv4 addresses of this container: `hostname -i` (its name in /etc/hosts)
# first, then every interface address from `hostname -I`.
local_addresses() {
	{ hostname -i 2>/dev/null || true; hostname -I 2>/dev/null || true; } |
		tr -s '[:blank:]' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' | awk '!seen[$0]++' || true
}

# Prints this node's IP on the service network. The address that is both
# local and among the seed name's A records is the right one even with
# several networks attached (overlay, docker_gwbridge, ...); DNS may list a
# new task a moment late, hence the wait before falling back to a guess.
detect_self() {
	local locals dns ip deadline=$((SECONDS + SELF_WAIT))
	locals=$(local_addresses)
	[[ -n $locals ]] || die "no IPv4 address found with hostname -i / -I"
	while :; do
		dns=$(resolve_seed_name)
		for ip in $locals; do
			if grep -qxF "$ip" <<<"$dns"; then
				log "own address $ip found among the A records of $SEED_NAME" >&2
				printf '%s\n' "$ip"
				return 0
			fi
		done
		((SECONDS < deadline)) || break
		sleep 1
	done
	# Prefer a non-loopback address (some images map the hostname to 127.0.1.1).
	ip=$(grep -v '^127\.' <<<"$locals" | head -n1 || true)
	ip=${ip:-$(head -n1 <<<"$locals")}
	log "none of [${locals//$'\n'/ }] is in $SEED_NAME [${dns//$'\n'/ }] after ${SELF_WAIT}s; using $ip" >&2
	printf '%s\n' "$ip"
}

# Seed candidates: the seed name's addresses that are not this container's.
# Own addresses must never become seeds (asd would find itself and drop the
# seed, and the name can list us).
peer_addresses() {
	local ip
	for ip in $(resolve_seed_name); do
		[[ $ip == "$SELF_IP" ]] && continue
		grep -qxF "$ip" <<<"$LOCAL_IPS" && continue
		printf '%s\n' "$ip"
	done
}

# `any`, `self` or an address -> what goes into the config.
bind_address() {
	if [[ $1 == self ]]; then printf '%s\n' "$SELF_IP"; else printf '%s\n' "$1"; fi
}

# Renders the template (rules in its header) from the associative array V.
render() {
	local line peer
	while IFS= read -r line || [[ -n $line ]]; do
		if [[ $line =~ ^[[:space:]]*(#|$) ]]; then
			continue
		elif [[ $line != *'{{'* ]]; then
			printf '%s\n' "$line"
		elif [[ $line == *'{{MESH_SEED}}'* ]]; then
			for peer in "${PEERS[@]}"; do
				V[MESH_SEED]=$peer
				render_line "$line"
			done
		else
			render_line "$line"
		fi
	done <"$TEMPLATE"
}

render_line() {
	local rest=$1 out=$1 name
	while [[ $rest =~ \{\{([A-Z0-9_]+)\}\} ]]; do
		name=${BASH_REMATCH[1]}
		[[ -v V[$name] ]] || die "unknown placeholder {{$name}} in $TEMPLATE"
		[[ -n ${V[$name]} ]] || return 0 # optional setting left unset
		out=${out//"{{$name}}"/"${V[$name]}"}
		rest=${rest//"{{$name}}"/}
	done
	printf '%s\n' "$out"
}

# Sends one info command to the local node, prints the answer.
info() {
	"$ASINFO" -h "$INFO_HOST" -p "$SERVICE_PORT" -v "$1" 2>&1
}

# Background loop (step 4). Reads asd's live seed list each round instead of
# remembering what it tipped, so it never tips a seed twice and it adds back
# a seed that asd or the pruning dropped.
seed_loop() {
	local sleep_pid='' waiting=0 dns='' last_dns='' cfg seeds ip seed answer
	trap '[[ -z $sleep_pid ]] || kill "$sleep_pid" 2>/dev/null; exit 0' TERM
	while :; do
		sleep "$SEED_INTERVAL" &
		sleep_pid=$!
		wait "$sleep_pid" || true

		cfg=$(info "get-config:context=network" || true)
		if [[ $cfg != *heartbeat.mode=* ]]; then
			if ((waiting++ == 0)); then log "seeding: asd not answering yet on $INFO_HOST:$SERVICE_PORT"; fi
			continue
		fi
		waiting=0
		seeds=$(grep -oE 'heartbeat\.mesh-seed-address-port=[^;]+' <<<"$cfg" | cut -d= -f2 || true)

		dns=$(resolve_seed_name)
		if [[ $dns != "$last_dns" ]]; then
			log "seeding: $SEED_NAME -> [${dns//$'\n'/ }]"
			last_dns=$dns
		fi
		# An empty answer is a DNS hiccup or a lone dev node: change nothing.
		[[ -n $dns ]] || continue

		for ip in $(peer_addresses); do
			grep -qxF "$ip:$HEARTBEAT_PORT" <<<"$seeds" && continue
			answer=$(info "tip:host=$ip;port=$HEARTBEAT_PORT" || true)
			log "seeding: tip $ip:$HEARTBEAT_PORT -> $answer"
		done

		[[ $PRUNE_SEEDS == true ]] || continue
		for seed in $seeds; do
			ip=${seed%:*}
			# Only IPv4 seeds on our heartbeat port are ours to manage.
			[[ ${seed##*:} == "$HEARTBEAT_PORT" && $ip =~ ^[0-9]+(\.[0-9]+){3}$ ]] || continue
			grep -qxF "$ip" <<<"$dns" && continue
			answer=$(info "tip-clear:host-port-list=$seed" || true)
			log "seeding: $ip left $SEED_NAME, tip-clear $seed -> $answer"
		done
	done
}

# --- 1. who am I -------------------------------------------------------------
[[ -r $TEMPLATE ]] || die "config template $TEMPLATE not readable"
LOCAL_IPS=$(local_addresses)
if [[ -n ${AEROSPIKE_ACCESS_ADDRESS:-} ]]; then
	SELF_IP=$AEROSPIKE_ACCESS_ADDRESS
	log "own address $SELF_IP (AEROSPIKE_ACCESS_ADDRESS)"
else
	SELF_IP=$(detect_self)
fi
mapfile -t PEERS < <(peer_addresses)

# --- 2. render the config ----------------------------------------------------
SERVICE_ADDRESS=$(bind_address "${AEROSPIKE_SERVICE_ADDRESS:-any}")
declare -A V=(
	[CLUSTER_NAME]=${AEROSPIKE_CLUSTER_NAME:-awesome-counter}
	[NODE_ID]=${AEROSPIKE_NODE_ID:-}
	[WORK_DIR]=$WORK_DIR
	[SERVICE_ADDRESS]=$SERVICE_ADDRESS
	[SERVICE_PORT]=$SERVICE_PORT
	[ACCESS_ADDRESS]=$SELF_IP
	[HEARTBEAT_ADDRESS]=$(bind_address "${AEROSPIKE_HEARTBEAT_ADDRESS:-self}")
	[HEARTBEAT_PORT]=$HEARTBEAT_PORT
	[MESH_SEED]=''
	[FABRIC_ADDRESS]=$(bind_address "${AEROSPIKE_FABRIC_ADDRESS:-self}")
	[FABRIC_PORT]=$FABRIC_PORT
	[ADMIN_ADDRESS]=$(bind_address "${AEROSPIKE_ADMIN_ADDRESS:-$SERVICE_ADDRESS}")
	[ADMIN_PORT]=${AEROSPIKE_ADMIN_PORT:-3003}
	[REPLICATION_FACTOR]=${AEROSPIKE_REPLICATION_FACTOR:-${REPLICATION_FACTOR:-2}}
	[STORAGE_FILE]=$STORAGE_FILE
	[STORAGE_SIZE]=${AEROSPIKE_STORAGE_SIZE:-4G}
)
# The seeding loop talks to the service port; asd also listens on 127.0.0.1
# there unless the service is bound to another loopback address.
if [[ $SERVICE_ADDRESS == any ]]; then INFO_HOST=127.0.0.1; else INFO_HOST=$SERVICE_ADDRESS; fi

# asd refuses to start without these directories.
mkdir -p "$(dirname "$CONF")" "$(dirname "$STORAGE_FILE")" "$WORK_DIR/smd" "$WORK_DIR/usr/udf/lua"
render >"$CONF.tmp"
mv "$CONF.tmp" "$CONF"
log "config $CONF: access-address $SELF_IP, mesh seeds [${PEERS[*]}], seed name $SEED_NAME"

# asd checks proto-fd-max (15000) against the soft open-files limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- 3. run asd, 4. keep seeding ---------------------------------------------
asd_pid=''
seed_pid=''
stopping=''
# shellcheck disable=SC2317 # called from the traps below
stop() {
	stopping=$1
	log "received $1, stopping asd (pid ${asd_pid:-not started yet})"
	[[ -z $asd_pid ]] || kill -TERM "$asd_pid" 2>/dev/null || true
}
trap 'stop SIGTERM' TERM
trap 'stop SIGINT' INT

"$ASD" --foreground --config-file "$CONF" &
asd_pid=$!
log "started asd (pid $asd_pid)"
# A signal that came before asd_pid was known has not reached asd yet.
[[ -z $stopping ]] || kill -TERM "$asd_pid" 2>/dev/null || true
seed_loop &
seed_pid=$!

# `wait` returns early when a trapped signal arrives; keep waiting until asd
# itself has exited, then report its status as ours.
rc=0
while :; do
	wait "$asd_pid" && rc=0 || rc=$?
	kill -0 "$asd_pid" 2>/dev/null || break
done
kill -TERM "$seed_pid" 2>/dev/null || true
wait "$seed_pid" 2>/dev/null || true
log "asd exited with status $rc"
exit "$rc"
