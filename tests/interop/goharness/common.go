package main

import (
	"bufio"
	"context"
	stded25519 "crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cometbft/cometbft/crypto"
	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/p2p/conn"
)

// fields is the payload of one JSON event line.
type fields map[string]any

// emitter writes one JSON object per line; safe for concurrent use.
type emitter struct {
	mu sync.Mutex
	w  io.Writer
}

var out = &emitter{w: os.Stdout}

func (e *emitter) emit(event string, f fields) {
	if f == nil {
		f = fields{}
	}
	f["event"] = event
	line, err := json.Marshal(f)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"event":"error","error":%q}`, err.Error()))
	}
	line = append(line, '\n')
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.Write(line)
}

// command is one JSON line read from stdin.
type command struct {
	Cmd     string `json:"cmd"`
	Conn    int    `json:"conn"`
	Peer    string `json:"peer"`
	Addr    string `json:"addr"`
	Channel int    `json:"channel"`
	Size    int    `json:"size"`
	Count   int    `json:"count"`
	Hex     string `json:"hex"`
}

// common holds the flags every subcommand shares.
type common struct {
	lifetimeS       float64
	ignoreStdin     bool
	keySeedHex      string
	nodeKeyFile     string
	logLevel        string
	flushThrottleMs int
	sendRate        int64
	recvRate        int64
	maxPacketBytes  int
	pingIntervalMs  int
	pongTimeoutMs   int
}

func (c *common) register(fs *flag.FlagSet) {
	fs.Float64Var(&c.lifetimeS, "lifetime-s", 60, "exit after this many seconds (bounded lifetime)")
	fs.BoolVar(&c.ignoreStdin, "ignore-stdin", false, "do not exit when stdin is closed")
	fs.StringVar(&c.keySeedHex, "key-seed", "", "hex of a 32-byte ed25519 seed for the node key (default: random)")
	fs.StringVar(&c.nodeKeyFile, "node-key", "", "path of a node_key.json to use as the node key")
	fs.StringVar(&c.logLevel, "log-level", "error", "CometBFT log level (debug|info|error|none), logged to stderr and as JSON \"log\" events")
	fs.IntVar(&c.flushThrottleMs, "flush-throttle-ms", 100, "MConnection flush throttle in milliseconds")
	fs.Int64Var(&c.sendRate, "send-rate", 5120000, "MConnection send rate limit in bytes/s (0 = unlimited)")
	fs.Int64Var(&c.recvRate, "recv-rate", 5120000, "MConnection receive rate limit in bytes/s (0 = unlimited)")
	fs.IntVar(&c.maxPacketBytes, "max-packet-payload", 1024, "MConnection max_packet_msg_payload_size in bytes")
	fs.IntVar(&c.pingIntervalMs, "ping-interval-ms", 60000, "MConnection ping interval in milliseconds")
	fs.IntVar(&c.pongTimeoutMs, "pong-timeout-ms", 45000, "MConnection pong timeout in milliseconds (< ping interval)")
}

func (c *common) mconnConfig() conn.MConnConfig {
	cfg := conn.DefaultMConnConfig()
	cfg.SendRate = c.sendRate
	cfg.RecvRate = c.recvRate
	cfg.MaxPacketMsgPayloadSize = c.maxPacketBytes
	cfg.FlushThrottle = time.Duration(c.flushThrottleMs) * time.Millisecond
	cfg.PingInterval = time.Duration(c.pingIntervalMs) * time.Millisecond
	cfg.PongTimeout = time.Duration(c.pongTimeoutMs) * time.Millisecond
	return cfg
}

func (c *common) privKey() (crypto.PrivKey, error) {
	if c.nodeKeyFile != "" && c.keySeedHex != "" {
		return nil, errors.New("--node-key and --key-seed are mutually exclusive")
	}
	if c.nodeKeyFile != "" {
		nk, err := p2p.LoadNodeKey(c.nodeKeyFile)
		if err != nil {
			return nil, err
		}
		return nk.PrivKey, nil
	}
	if c.keySeedHex == "" {
		return ed25519.GenPrivKey(), nil
	}
	seed, err := hex.DecodeString(c.keySeedHex)
	if err != nil {
		return nil, fmt.Errorf("--key-seed: %w", err)
	}
	if len(seed) != stded25519.SeedSize {
		return nil, fmt.Errorf("--key-seed: expected %d bytes, got %d", stded25519.SeedSize, len(seed))
	}
	return ed25519.PrivKey(stded25519.NewKeyFromSeed(seed)), nil
}

func (c *common) newLogger() (log.Logger, error) {
	if c.logLevel == "none" {
		return log.NewNopLogger(), nil
	}
	opt, err := log.AllowLevel(c.logLevel)
	if err != nil {
		return nil, err
	}
	return log.NewFilter(&jsonLogger{text: log.NewTMLogger(log.NewSyncWriter(os.Stderr))}, opt), nil
}

// jsonLogger copies every record to stderr as text and to stdout as a "log" event.
type jsonLogger struct {
	text log.Logger
	ctx  []any
}

func (l *jsonLogger) record(level, msg string, kv []any) {
	all := append(append([]any{}, l.ctx...), kv...)
	f := fields{}
	for i := 0; i+1 < len(all); i += 2 {
		f[fmt.Sprint(all[i])] = fmt.Sprint(all[i+1])
	}
	out.emit("log", fields{"level": level, "msg": msg, "fields": f})
}

func (l *jsonLogger) Debug(msg string, kv ...any) {
	l.text.Debug(msg, kv...)
	l.record("debug", msg, kv)
}
func (l *jsonLogger) Info(msg string, kv ...any) { l.text.Info(msg, kv...); l.record("info", msg, kv) }
func (l *jsonLogger) Error(msg string, kv ...any) {
	l.text.Error(msg, kv...)
	l.record("error", msg, kv)
}
func (l *jsonLogger) With(kv ...any) log.Logger {
	return &jsonLogger{text: l.text.With(kv...), ctx: append(append([]any{}, l.ctx...), kv...)}
}

// lifetime returns a context cancelled after --lifetime-s, on stdin EOF, or on
// SIGINT/SIGTERM, plus the channel of stdin commands and a function giving the
// reason the context ended.
func (c *common) lifetime() (context.Context, <-chan command, func() string) {
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	reason := "running"
	var mu sync.Mutex
	stop := func(r string) {
		once.Do(func() {
			mu.Lock()
			reason = r
			mu.Unlock()
			cancel()
		})
	}
	time.AfterFunc(time.Duration(c.lifetimeS*float64(time.Second)), func() { stop("lifetime") })
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() { s := <-sigs; stop("signal " + s.String()) }()
	cmds := make(chan command, 64)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			var cmd command
			if err := json.Unmarshal([]byte(line), &cmd); err != nil {
				out.emit("error", fields{"error": "bad command: " + err.Error()})
				continue
			}
			select {
			case cmds <- cmd:
			case <-ctx.Done():
				return
			}
		}
		if !c.ignoreStdin {
			stop("stdin closed")
		}
	}()
	return ctx, cmds, func() string { mu.Lock(); defer mu.Unlock(); return reason }
}

// requireLoopback refuses an address ("host:port" or "ID@host:port") whose host is
// not a loopback IP: the harness never talks beyond 127.0.0.1 / ::1.
func requireLoopback(addr string) error {
	if at := strings.LastIndex(addr, "@"); at >= 0 {
		addr = addr[at+1:]
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("address %q: only loopback IPs are allowed", addr)
	}
	return nil
}

// payload returns the deterministic test payload of n bytes: byte i is i mod 256.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// commandData is the message a "send" command asks for: its hex, or a payload of its size.
func commandData(cmd command) ([]byte, error) {
	if cmd.Hex != "" {
		return hex.DecodeString(cmd.Hex)
	}
	return payload(cmd.Size), nil
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// describeMessage is the common part of a "receive" event.
func describeMessage(chID byte, msg []byte) fields {
	f := fields{"channel": int(chID), "size": len(msg), "sha256": digest(msg)}
	if len(msg) <= 512 {
		f["hex"] = hex.EncodeToString(msg)
	}
	return f
}

// secretHandshake runs the SecretConnection handshake on c under the same 3 s
// deadline the CometBFT transport uses, and checks the peer ID if expected.
func secretHandshake(c net.Conn, key crypto.PrivKey, expectID string) (*conn.SecretConnection, error) {
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return nil, err
	}
	sc, err := conn.MakeSecretConnection(c, key)
	if err != nil {
		return nil, fmt.Errorf("secret connection handshake: %w", err)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	remote := string(p2p.PubKeyToID(sc.RemotePubKey()))
	if expectID != "" && remote != expectID {
		return nil, fmt.Errorf("remote node ID mismatch: expected %s, got %s", expectID, remote)
	}
	return sc, nil
}

// echoChannels are the MConnection channels of mconn-echo and bench-mconn.
func echoChannels() []*conn.ChannelDescriptor {
	return []*conn.ChannelDescriptor{
		{ID: 0x01, Priority: 1, SendQueueCapacity: 100, RecvMessageCapacity: 1 << 20},
		{ID: 0x02, Priority: 5, SendQueueCapacity: 100, RecvMessageCapacity: 1 << 20},
		{ID: 0x03, Priority: 10, SendQueueCapacity: 100, RecvBufferCapacity: 1 << 16, RecvMessageCapacity: 4 << 20},
	}
}

// percentile is the nearest-rank percentile p (0..100) of already sorted xs.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100.0+0.999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return sorted[rank]
}

func sortFloats(xs []float64) { sort.Float64s(xs) }
