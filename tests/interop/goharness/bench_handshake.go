package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/p2p/conn"
)

// runBenchHandshake measures SecretConnection handshakes per second with both ends
// in this process on GOMAXPROCS=1 (one core), so one handshake counts the work of
// both ends, as cometp2p's bench/secret_connection.py counts it. Transport is
// net.Pipe (--transport pipe) or a TCP loopback connection per handshake
// (--transport tcp, accept and dial included). Emits one "bench" event with the
// wall-clock rate and the rate per CPU second of this process (robust to other load).
func runBenchHandshake(args []string) error {
	fs := flag.NewFlagSet("bench-handshake", flag.ContinueOnError)
	transport := fs.String("transport", "tcp", "pipe or tcp (loopback)")
	seconds := fs.Float64("seconds", 2, "measure for this long (after one warm-up handshake)")
	procs := fs.Int("procs", 1, "GOMAXPROCS while measuring")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *transport != "pipe" && *transport != "tcp" {
		return fmt.Errorf("--transport must be pipe or tcp, got %q", *transport)
	}
	if *seconds <= 0 || *seconds > 60 {
		return errors.New("--seconds must be in (0, 60]")
	}
	runtime.GOMAXPROCS(*procs)
	keyA, keyB := ed25519.GenPrivKey(), ed25519.GenPrivKey()

	var listener net.Listener
	if *transport == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		listener = l
	}
	pair := func() (net.Conn, net.Conn, error) {
		if listener == nil {
			a, b := net.Pipe()
			return a, b, nil
		}
		accepted := make(chan net.Conn, 1)
		failed := make(chan error, 1)
		go func() {
			c, err := listener.Accept()
			if err != nil {
				failed <- err
				return
			}
			accepted <- c
		}()
		a, err := net.DialTimeout("tcp", listener.Addr().String(), 3*time.Second)
		if err != nil {
			return nil, nil, err
		}
		select {
		case b := <-accepted:
			return a, b, nil
		case err := <-failed:
			a.Close()
			return nil, nil, err
		case <-time.After(3 * time.Second):
			a.Close()
			return nil, nil, errors.New("accept timed out")
		}
	}
	one := func() error {
		a, b, err := pair()
		if err != nil {
			return err
		}
		defer a.Close()
		defer b.Close()
		_ = a.SetDeadline(time.Now().Add(5 * time.Second))
		_ = b.SetDeadline(time.Now().Add(5 * time.Second))
		done := make(chan error, 1)
		go func() {
			_, err := conn.MakeSecretConnection(b, keyB)
			done <- err
		}()
		if _, err := conn.MakeSecretConnection(a, keyA); err != nil {
			return err
		}
		return <-done
	}
	if err := one(); err != nil { // warm-up
		return err
	}
	count := 0
	cpuStart := cpuSeconds()
	start := time.Now()
	deadline := start.Add(time.Duration(*seconds * float64(time.Second)))
	for time.Now().Before(deadline) {
		if err := one(); err != nil {
			return err
		}
		count++
	}
	elapsed := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpuStart
	out.emit("bench", fields{
		"transport":            *transport,
		"procs":                *procs,
		"count":                count,
		"elapsed_s":            elapsed,
		"handshakes_per_s":     float64(count) / elapsed,
		"cpu_s":                cpu,
		"handshakes_per_cpu_s": float64(count) / cpu,
	})
	return nil
}

// cpuSeconds is the user + system CPU time of this process so far (getrusage), so
// that a rate per CPU second does not depend on other load on the machine.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
