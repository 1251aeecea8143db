// Command goharness is cometp2p's small Go test harness: it runs CometBFT's own
// p2p code (SecretConnection, MConnection, Switch) on loopback so that the
// Python implementation can be tested against the reference behaviour.
//
// Every subcommand prints one JSON object per line on stdout (an "event"
// field names it), reads optional JSON commands from stdin, and has a bounded
// lifetime: it exits after --lifetime-s seconds, when stdin is closed, or on
// SIGINT/SIGTERM. Human-readable diagnostics go to stderr.
//
// Only loopback addresses are accepted for listening and dialing.
//
// Subcommands:
//
//	mconn-echo   raw MConnection over SecretConnection (no NodeInfo), echoing messages
//	             on channels 0x01 (priority 1), 0x02 (5), 0x03 (10, 4 MiB messages);
//	             --ack CH:N answers every N-th message on CH with an 8-byte big-endian
//	             count instead (one-way benchmarks)
//	switch-echo  a p2p.Switch + MultiplexTransport + NodeInfo with an echo reactor on
//	             channel 0x42 (raw bytes; --echo-mode all|ping|none)
//	bench-mconn  throughput / latency client for an echoing MConnection peer
//	bench-handshake  SecretConnection handshakes/s, both ends in-process on one core
//
// Events (stdout, one JSON object per line, "event" names it):
//
//	listening {listen, node_id}          dialed {remote_addr|addr, node_id}
//	handshake {conn, remote_node_id, remote_addr, local_addr}
//	receive {channel, size, sha256, hex (when size <= 512), conn|peer}
//	sent {channel, size, ok}             send_failed {channel}
//	disconnect {conn, reason}            closed {conn, reason}
//	peer_added {peer, outbound, moniker, network, channels, ...}
//	peer_removed {peer, reason}          dial_failed {addr, error}
//	handshake_failed {remote_addr, error}
//	bench {size, count, elapsed_s, mb_per_s, msgs_per_s, rtt_p50_ms, rtt_p99_ms, ...}
//	log {level, msg, fields}             error {error}
//	fatal {error}  (then exit status 1)  exit {reason}
//
// Commands (stdin, one JSON object per line):
//
//	{"cmd":"send","channel":N,"hex":"..."} or {"cmd":"send","channel":N,"size":S,"count":C}
//	    (size gives the payload whose byte i is i mod 256; optional "conn" or "peer" target)
//	{"cmd":"close","conn":N}             mconn-echo: stop one connection (0 = all)
//	{"cmd":"dial","addr":"ID@host:port"} switch-echo
//	{"cmd":"stop_peer","peer":"ID"}      switch-echo
package main

import (
	"fmt"
	"os"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: goharness <mconn-echo|switch-echo|bench-mconn|bench-handshake> [flags]  (-h for flags)")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "mconn-echo":
		err = runMConnEcho(args)
	case "switch-echo":
		err = runSwitchEcho(args)
	case "bench-mconn":
		err = runBenchMConn(args)
	case "bench-handshake":
		err = runBenchHandshake(args)
	case "-h", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		out.emit("fatal", fields{"error": err.Error()})
		fmt.Fprintln(os.Stderr, "goharness:", err)
		os.Exit(1)
	}
}
