package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/cometbft/cometbft/crypto"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/p2p/conn"
)

// mconnSession is one authenticated connection running CometBFT's MConnection.
type mconnSession struct {
	id    int
	mconn *conn.MConnection
	done  chan struct{}
	once  sync.Once
}

func (s *mconnSession) finish(event string, f fields) {
	s.once.Do(func() {
		f["conn"] = s.id
		out.emit(event, f)
		close(s.done)
	})
}

type mconnEcho struct {
	common
	listen   string
	dial     string
	expectID string
	noEcho   bool
	quiet    bool
	sends    multiFlag
	acks     multiFlag
	ackEvery map[byte]uint64

	key      crypto.PrivKey
	logger   log.Logger
	mu       sync.Mutex
	sessions map[int]*mconnSession
	nextID   int
}

type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runMConnEcho(args []string) error {
	h := &mconnEcho{sessions: map[int]*mconnSession{}}
	fs := flag.NewFlagSet("mconn-echo", flag.ContinueOnError)
	h.register(fs)
	fs.StringVar(&h.listen, "listen", "", "accept connections on host:port (e.g. 127.0.0.1:0)")
	fs.StringVar(&h.dial, "dial", "", "dial host:port (one connection; exit when it ends)")
	fs.StringVar(&h.expectID, "expect-id", "", "require this remote node ID after the handshake")
	fs.BoolVar(&h.noEcho, "no-echo", false, "do not echo received messages")
	fs.BoolVar(&h.quiet, "quiet", false, "no \"receive\" event per message (for benchmarks)")
	fs.Var(&h.sends, "send", "after the handshake send CH:SIZE[:COUNT] payload messages (repeatable)")
	fs.Var(&h.acks, "ack", "on channel CH answer every N-th message with an 8-byte big-endian "+
		"count of messages received there, instead of echoing: CH:N (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h.ackEvery = map[byte]uint64{}
	for _, spec := range h.acks {
		var ch, n int
		if k, _ := fmt.Sscanf(spec, "%d:%d", &ch, &n); k != 2 || ch < 0 || ch > 255 || n < 1 {
			return fmt.Errorf("bad --ack %q, expected CH:N with N >= 1", spec)
		}
		h.ackEvery[byte(ch)] = uint64(n)
	}
	if (h.listen == "") == (h.dial == "") {
		return errors.New("exactly one of --listen and --dial is required")
	}
	if err := requireLoopback(h.listen + h.dial); err != nil {
		return err
	}
	var err error
	if h.key, err = h.privKey(); err != nil {
		return err
	}
	if h.logger, err = h.newLogger(); err != nil {
		return err
	}
	ctx, cmds, reason := h.lifetime()
	nodeID := string(p2p.PubKeyToID(h.key.PubKey()))
	var dialDone <-chan struct{}

	if h.listen != "" {
		ln, err := net.Listen("tcp", h.listen)
		if err != nil {
			return err
		}
		defer ln.Close()
		out.emit("listening", fields{"listen": ln.Addr().String(), "node_id": nodeID})
		go h.acceptLoop(ctx, ln)
	} else {
		c, err := net.DialTimeout("tcp", h.dial, 3*time.Second)
		if err != nil {
			return err
		}
		out.emit("dialed", fields{"remote_addr": c.RemoteAddr().String(), "node_id": nodeID})
		s, err := h.serve(c)
		if err != nil {
			return err
		}
		dialDone = s.done
	}

	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-dialDone:
			running = false
		case cmd := <-cmds:
			h.handle(cmd)
		}
	}
	h.mu.Lock()
	for _, s := range h.sessions {
		_ = s.mconn.Stop()
		s.finish("closed", fields{"reason": "harness exiting"})
	}
	h.mu.Unlock()
	r := reason()
	if r == "running" {
		r = "connection ended"
	}
	out.emit("exit", fields{"reason": r})
	return nil
}

func (h *mconnEcho) acceptLoop(ctx context.Context, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				out.emit("error", fields{"error": "accept: " + err.Error()})
			}
			return
		}
		go func() {
			if _, err := h.serve(c); err != nil {
				out.emit("handshake_failed", fields{"remote_addr": c.RemoteAddr().String(), "error": err.Error()})
			}
		}()
	}
}

// serve authenticates c and starts an MConnection on it.
func (h *mconnEcho) serve(c net.Conn) (*mconnSession, error) {
	sc, err := secretHandshake(c, h.key, h.expectID)
	if err != nil {
		c.Close()
		return nil, err
	}
	h.mu.Lock()
	h.nextID++
	s := &mconnSession{id: h.nextID, done: make(chan struct{})}
	h.sessions[s.id] = s
	h.mu.Unlock()

	var counts [256]uint64 // messages received per channel (only this session's receive goroutine)
	onReceive := func(chID byte, msg []byte) {
		if !h.quiet {
			f := describeMessage(chID, msg)
			f["conn"] = s.id
			out.emit("receive", f)
		}
		if h.noEcho {
			return
		}
		if every := h.ackEvery[chID]; every > 0 {
			counts[chID]++
			if counts[chID]%every == 0 {
				ack := binary.BigEndian.AppendUint64(nil, counts[chID])
				if !s.mconn.Send(chID, ack) {
					out.emit("send_failed", fields{"conn": s.id, "channel": int(chID), "size": len(ack)})
				}
			}
			return
		}
		// The MConnection reuses its reassembly buffer after this callback returns.
		echo := append([]byte(nil), msg...)
		if !s.mconn.Send(chID, echo) {
			out.emit("send_failed", fields{"conn": s.id, "channel": int(chID), "size": len(echo)})
		}
	}
	onError := func(r any) {
		s.finish("disconnect", fields{"reason": fmt.Sprint(r)})
		go func() { _ = s.mconn.Stop() }()
	}
	s.mconn = conn.NewMConnectionWithConfig(sc, echoChannels(), onReceive, onError, h.mconnConfig())
	s.mconn.SetLogger(h.logger.With("conn", s.id))
	if err := s.mconn.Start(); err != nil {
		return nil, err
	}
	out.emit("handshake", fields{
		"conn":           s.id,
		"remote_node_id": string(p2p.PubKeyToID(sc.RemotePubKey())),
		"remote_addr":    c.RemoteAddr().String(),
		"local_addr":     c.LocalAddr().String(),
	})
	for _, spec := range h.sends {
		var ch, size, count int
		count = 1
		if n, _ := fmt.Sscanf(spec, "%d:%d:%d", &ch, &size, &count); n < 2 {
			out.emit("error", fields{"error": "bad --send " + spec + ", expected CH:SIZE[:COUNT]"})
			continue
		}
		for i := 0; i < count; i++ {
			ok := s.mconn.Send(byte(ch), payload(size))
			out.emit("sent", fields{"conn": s.id, "channel": ch, "size": size, "ok": ok})
		}
	}
	return s, nil
}

// handle runs one stdin command: send (to "conn", default all) or close.
func (h *mconnEcho) handle(cmd command) {
	h.mu.Lock()
	var targets []*mconnSession
	for id, s := range h.sessions {
		if cmd.Conn == 0 || cmd.Conn == id {
			targets = append(targets, s)
		}
	}
	h.mu.Unlock()
	switch cmd.Cmd {
	case "send":
		data, err := commandData(cmd)
		if err != nil {
			out.emit("error", fields{"error": "send: " + err.Error()})
			return
		}
		count := max(cmd.Count, 1)
		for _, s := range targets {
			for i := 0; i < count; i++ {
				ok := s.mconn.Send(byte(cmd.Channel), data)
				out.emit("sent", fields{"conn": s.id, "channel": cmd.Channel, "size": len(data), "ok": ok})
			}
		}
	case "close":
		for _, s := range targets {
			_ = s.mconn.Stop()
			s.finish("closed", fields{"reason": "close command"})
		}
	default:
		out.emit("error", fields{"error": "unknown command " + cmd.Cmd})
	}
}
