#!/bin/bash
# A local three-node RabbitMQ cluster on loopback, beside the single node the other tests use
# (that one keeps rabbit@<host> on 5672; these are hh-c1..3@localhost on AMQP 5681..5683 and
# distribution ports 25681..25683, with their own data directories, sharing the package's
# Erlang cookie). Idempotent; asks nothing.
#
#   deploy/cluster.sh start         # install RabbitMQ if needed, start and join the three nodes
#   deploy/cluster.sh stop          # stop them (data kept: a restart rejoins the same cluster)
#   deploy/cluster.sh status        # which nodes run, and the cluster's view of them
#   deploy/cluster.sh urls          # the amqp:// URLs, comma-separated (HH_AMQP_URLS)
#   deploy/cluster.sh start-node N  # one node (after a kill or a stop)
#   deploy/cluster.sh stop-node N   # one node, cleanly (as an upgrade does)
#   deploy/cluster.sh pid N         # the node's OS process (for kill -9, SIGSTOP)
#   deploy/cluster.sh heal          # restart what the nodes gave up on (deploy/quorum-heal.erl)
#   deploy/cluster.sh reset         # stop and delete the cluster's data
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# Under the broker user's home: the nodes run as that user (Debian's rabbitmq-server does so).
DATA=${HH_CLUSTER_DIR:-/var/lib/rabbitmq/hh-cluster}
NODES=(1 2 3)
# How soon the nodes count an unresponsive one (paused, partitioned) as down, and elect its
# quorum queues' new leaders: Erlang's default is 60 s, during which those queues take and
# give nothing. A node that crashes is noticed at once whatever this is.
TICKTIME_S=${HH_CLUSTER_TICKTIME_S:-10}
# A node paused past that (a VM or GC pause) comes back to peers that counted it down: Mnesia
# then records a partition that stays until a node restarts. autoheal restarts the side cut
# off as soon as they meet again; pause_minority did not (the resumed node found its peers up
# at once, so never a minority), and the default, ignore, never does.
PARTITIONS=autoheal

log() { printf '[cluster] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
node() { echo "hh-c$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
ctl() { local n=$1; shift; as_root rabbitmqctl -q -n "$(node "$n")" "$@"; }

install() {
  command -v rabbitmq-server >/dev/null 2>&1 && return
  "$HERE/services.sh" install-rabbitmq  # the same package the single node uses
}

prepare() {
  as_root mkdir -p "$DATA"
  as_root sh -c "printf '[].\n' > '$DATA/enabled_plugins'"  # no plugins: the AMQP port only
  for n in "${NODES[@]}"; do as_root mkdir -p "$DATA/$n"; done
  as_root chown -R rabbitmq:rabbitmq "$DATA"
}

start_node() {
  local n=$1
  # A node a test paused and never resumed (it failed half-way) answers nothing: resume it.
  [ -s "$DATA/$n/pid" ] && as_root kill -CONT "$(as_root cat "$DATA/$n/pid")" 2>/dev/null || true
  if port_open "$(amqp_port "$n")"; then return; fi
  log "starting $(node "$n") on 127.0.0.1:$(amqp_port "$n")"
  as_root env RABBITMQ_NODENAME="$(node "$n")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" RABBITMQ_DIST_PORT=$((25680 + n)) \
    RABBITMQ_MNESIA_BASE="$DATA/$n/mnesia" RABBITMQ_LOG_BASE="$DATA/$n/log" \
    RABBITMQ_PID_FILE="$DATA/$n/pid" RABBITMQ_ENABLED_PLUGINS_FILE="$DATA/enabled_plugins" ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} -kernel net_ticktime $TICKTIME_S -rabbit cluster_partition_handling $PARTITIONS" \
    rabbitmq-server -detached
}

await_node() {
  local n=$1
  for _ in $(seq 1 120); do
    if port_open "$(amqp_port "$n")" && ctl "$n" await_startup --timeout 5 >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  log "$(node "$n") did not start within 120 s (its log: $DATA/$n/log)"; return 1
}

nodes_seen() {  # running_nodes (up) or disk_nodes (members), as node $1 sees them
  ctl "$1" cluster_status --formatter json 2>/dev/null \
    | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin).get(sys.argv[1], [])))' "$2"
}
running_nodes() { nodes_seen "$1" running_nodes; }

join() {
  local n=$1
  # A member already (not only one node 1 sees up: a node just started, or one a recorded
  # partition hides, would be stopped and joined again, moving every leader it holds).
  if nodes_seen 1 disk_nodes | grep -qw "$(node "$n")"; then return; fi
  log "joining $(node "$n") to $(node 1)"
  ctl "$n" stop_app >/dev/null
  ctl "$n" join_cluster "$(node 1)" >/dev/null
  ctl "$n" start_app >/dev/null 2>&1  # (its table-creation warnings are noise)
}

heal() {  # prints "<node>: <what was restarted>" per node that had given something up
  local n out
  for n in "${NODES[@]}"; do
    port_open "$(amqp_port "$n")" || continue
    # A node whose app is stopping or starting (autoheal restarts one) may not answer: said,
    # so that whoever waits on a whole cluster asks again, and the other nodes still healed.
    if ! out=$(ctl "$n" eval "$(cat "$HERE/quorum-heal.erl")"); then
      log "$(node "$n") did not answer the heal"
      echo "$(node "$n"): not answering"
      continue
    fi
    if [ "$out" != "[]" ]; then
      log "$(node "$n") had given up on $out: restarted"
      echo "$(node "$n"): $out"
    fi
  done
}

stop_node() {
  local n=$1
  if ctl "$n" ping >/dev/null 2>&1; then
    ctl "$n" stop >/dev/null 2>&1 || true
    log "$(node "$n") stopped"
  fi
}

case "${1:-start}" in
  start)
    install; prepare
    for n in "${NODES[@]}"; do start_node "$n"; done
    for n in "${NODES[@]}"; do await_node "$n"; done
    for n in 2 3; do join "$n"; done
    heal
    log "running: $(running_nodes 1)" ;;
  stop) for n in "${NODES[@]}"; do stop_node "$n"; done ;;
  status)
    for n in "${NODES[@]}"; do
      if port_open "$(amqp_port "$n")"; then echo "$(node "$n"): up"; else echo "$(node "$n"): down"; fi
    done
    port_open "$(amqp_port 1)" && echo "running (as $(node 1) sees it): $(running_nodes 1)" || true ;;
  urls) printf 'amqp://guest:guest@127.0.0.1:%s/,' 5681 5682 5683 | sed 's/,$/\n/' ;;
  start-node) start_node "$2"; await_node "$2"; heal ;;
  stop-node) stop_node "$2" ;;
  pid) as_root cat "$DATA/$2/pid" ;;
  heal) heal ;;
  reset) for n in "${NODES[@]}"; do stop_node "$n"; done; as_root rm -rf "$DATA" ;;
  *) echo "usage: $0 start|stop|status|urls|start-node N|stop-node N|pid N|heal|reset" >&2; exit 2 ;;
esac
