package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/p2p/conn"
)

type benchMConn struct {
	common
	dial      string
	expectID  string
	channel   int
	size      int
	count     int
	rttCount  int
	rttSize   int
	rttWarmup int
	ackEvery  int
}

type echoed struct {
	channel byte
	size    int
	at      time.Time
}

// runBenchMConn measures an echoing MConnection peer: first count messages of
// size bytes sent back to back (throughput of payload sent and echoed back, or
// with --ack-every N sent one way and acknowledged every N messages), then
// rtt-count lone messages of rtt-size bytes, one at a time (round trips).
func runBenchMConn(args []string) error {
	b := &benchMConn{}
	fs := flag.NewFlagSet("bench-mconn", flag.ContinueOnError)
	b.register(fs)
	fs.StringVar(&b.dial, "dial", "", "host:port of an echoing MConnection peer (required)")
	fs.StringVar(&b.expectID, "expect-id", "", "require this remote node ID")
	fs.IntVar(&b.channel, "channel", 0x03, "channel to send on (0x01, 0x02 or 0x03)")
	fs.IntVar(&b.size, "size", 1024, "throughput phase: message size in bytes")
	fs.IntVar(&b.count, "count", 1000, "throughput phase: number of messages")
	fs.IntVar(&b.rttCount, "rtt-count", 50, "latency phase: number of round trips")
	fs.IntVar(&b.rttSize, "rtt-size", 64, "latency phase: message size in bytes")
	fs.IntVar(&b.rttWarmup, "rtt-warmup", 0, "latency phase: leading round trips left out of the figures")
	fs.IntVar(&b.ackEvery, "ack-every", 0, "throughput phase: the peer acknowledges every N-th message "+
		"instead of echoing each (mconn-echo --ack CH:N); count must be a multiple of N (0 = echo)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if b.dial == "" {
		return errors.New("--dial is required")
	}
	if b.ackEvery < 0 || (b.ackEvery > 0 && b.count%b.ackEvery != 0) {
		return fmt.Errorf("--count %d must be a multiple of --ack-every %d", b.count, b.ackEvery)
	}
	if err := requireLoopback(b.dial); err != nil {
		return err
	}
	key, err := b.privKey()
	if err != nil {
		return err
	}
	logger, err := b.newLogger()
	if err != nil {
		return err
	}
	ctx, _, reason := b.lifetime()

	c, err := net.DialTimeout("tcp", b.dial, 3*time.Second)
	if err != nil {
		return err
	}
	sc, err := secretHandshake(c, key, b.expectID)
	if err != nil {
		c.Close()
		return err
	}
	received := make(chan echoed, 4096)
	failed := make(chan string, 1)
	onReceive := func(chID byte, msg []byte) {
		received <- echoed{channel: chID, size: len(msg), at: time.Now()}
	}
	onError := func(r any) {
		select {
		case failed <- fmt.Sprint(r):
		default:
		}
	}
	mconn := conn.NewMConnectionWithConfig(sc, echoChannels(), onReceive, onError, b.mconnConfig())
	mconn.SetLogger(logger)
	if err := mconn.Start(); err != nil {
		return err
	}
	defer func() { _ = mconn.Stop() }()
	out.emit("handshake", fields{"remote_node_id": string(p2p.PubKeyToID(sc.RemotePubKey()))})

	// await waits for n echoes, or fails on disconnect / end of lifetime.
	await := func(n int) (time.Time, error) {
		var last time.Time
		for i := 0; i < n; i++ {
			select {
			case e := <-received:
				last = e.at
			case r := <-failed:
				return last, fmt.Errorf("connection failed after %d of %d echoes: %s", i, n, r)
			case <-ctx.Done():
				return last, fmt.Errorf("stopped (%s) after %d of %d echoes", reason(), i, n)
			}
		}
		return last, nil
	}

	ch := byte(b.channel)
	msg := payload(b.size)
	start := time.Now()
	sendErr := make(chan error, 1)
	go func() {
		for i := 0; i < b.count; i++ {
			if !mconn.Send(ch, msg) {
				sendErr <- fmt.Errorf("send %d of %d timed out or failed", i+1, b.count)
				return
			}
		}
		sendErr <- nil
	}()
	replies := b.count
	if b.ackEvery > 0 {
		replies = b.count / b.ackEvery
	}
	last, err := await(replies)
	if err != nil {
		return err
	}
	if err := <-sendErr; err != nil {
		return err
	}
	elapsed := 0.0
	if replies > 0 {
		elapsed = last.Sub(start).Seconds()
	}

	rtts := make([]float64, 0, b.rttCount)
	small := payload(b.rttSize)
	for i := 0; i < b.rttCount; i++ {
		t0 := time.Now()
		if !mconn.Send(ch, small) {
			return fmt.Errorf("latency send %d failed", i+1)
		}
		t1, err := await(1)
		if err != nil {
			return err
		}
		if i >= b.rttWarmup {
			rtts = append(rtts, float64(t1.Sub(t0).Microseconds())/1000.0)
		}
	}
	sortFloats(rtts)

	result := fields{
		"size":              b.size,
		"count":             b.count,
		"channel":           b.channel,
		"elapsed_s":         elapsed,
		"rtt_count":         b.rttCount,
		"rtt_size":          b.rttSize,
		"rtt_warmup":        b.rttWarmup,
		"ack_every":         b.ackEvery,
		"flush_throttle_ms": b.flushThrottleMs,
		"send_rate":         b.sendRate,
		"recv_rate":         b.recvRate,
	}
	if elapsed > 0 {
		result["mb_per_s"] = float64(b.size*b.count) / elapsed / 1e6
		result["msgs_per_s"] = float64(b.count) / elapsed
	}
	if len(rtts) > 0 {
		result["rtt_p50_ms"] = percentile(rtts, 50)
		result["rtt_p99_ms"] = percentile(rtts, 99)
	}
	out.emit("bench", result)
	out.emit("exit", fields{"reason": "done"})
	return nil
}
