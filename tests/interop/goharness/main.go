// Command goharness is cometp2p's small Go test harness: it runs CometBFT's own
// p2p code (SecretConnection, MConnection, Switch) on loopback so that the
// Python implementation can be tested against the reference behaviour.
//
// Every subcommand prints one JSON object per line on stdout (an "event"
// field names it), reads optional JSON commands from stdin, and has a bounded
// lifetime: it exits after --lifetime-s seconds, when stdin is closed, or on
// SIGINT/SIGTERM. Human-readable diagnostics go to stderr.
//
// Subcommands:
//
//	mconn-echo   raw MConnection over SecretConnection (no NodeInfo), echoing messages
//	switch-echo  a p2p.Switch with an echo reactor (full NodeInfo handshake)
//	bench-mconn  throughput / latency client for an echoing MConnection peer
package main

import (
	"fmt"
	"os"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: goharness <mconn-echo|switch-echo|bench-mconn> [flags]  (-h for flags)")
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
