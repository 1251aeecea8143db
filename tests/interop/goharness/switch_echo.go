package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/cosmos/gogoproto/proto"

	"github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/p2p/conn"
	"github.com/cometbft/cometbft/version"
)

// rawMessage is a "protobuf message" whose encoding is its bytes, unchanged, so
// the echo channel carries arbitrary bytes like cometp2p's testing EchoReactor.
type rawMessage struct{ data []byte }

var (
	_ proto.Message     = (*rawMessage)(nil)
	_ proto.Marshaler   = (*rawMessage)(nil)
	_ proto.Unmarshaler = (*rawMessage)(nil)
	_ proto.Merger      = (*rawMessage)(nil)
)

func (m *rawMessage) Reset()                   { m.data = nil }
func (m *rawMessage) String() string           { return hex.EncodeToString(m.data) }
func (*rawMessage) ProtoMessage()              {}
func (m *rawMessage) Marshal() ([]byte, error) { return m.data, nil }

// Unmarshal copies b: the MConnection reuses its reassembly buffer.
func (m *rawMessage) Unmarshal(b []byte) error { m.data = append([]byte(nil), b...); return nil }

func (m *rawMessage) Merge(src proto.Message) {
	if s, ok := src.(*rawMessage); ok {
		m.data = append(m.data, s.data...)
	}
}

var (
	pingPrefix = []byte("ping:")
	pongPrefix = []byte("pong:")
)

// echoReactor answers messages on its channel according to its mode:
// "all" sends every message back unchanged; "ping" answers "ping:X" with
// "pong:X" and only records anything else (as cometp2p's EchoReactor does);
// "none" only records.
type echoReactor struct {
	p2p.BaseReactor
	channel byte
	mode    string
}

func newEchoReactor(channel byte, mode string) *echoReactor {
	r := &echoReactor{channel: channel, mode: mode}
	r.BaseReactor = *p2p.NewBaseReactor("EchoReactor", r)
	return r
}

func (r *echoReactor) GetChannels() []*conn.ChannelDescriptor {
	return []*conn.ChannelDescriptor{{
		ID:                  r.channel,
		Priority:            5,
		SendQueueCapacity:   100,
		RecvMessageCapacity: 4 << 20,
		MessageType:         &rawMessage{},
	}}
}

func (r *echoReactor) AddPeer(peer p2p.Peer) {
	f := fields{
		"peer":        string(peer.ID()),
		"outbound":    peer.IsOutbound(),
		"persistent":  peer.IsPersistent(),
		"remote_addr": peer.RemoteAddr().String(),
	}
	if ni, ok := peer.NodeInfo().(p2p.DefaultNodeInfo); ok {
		f["moniker"] = ni.Moniker
		f["network"] = ni.Network
		f["version"] = ni.Version
		f["listen_addr"] = ni.ListenAddr
		f["channels"] = hex.EncodeToString(ni.Channels)
		f["p2p_version"] = ni.ProtocolVersion.P2P
		f["block_version"] = ni.ProtocolVersion.Block
		f["app_version"] = ni.ProtocolVersion.App
	}
	out.emit("peer_added", f)
}

func (r *echoReactor) RemovePeer(peer p2p.Peer, reason any) {
	out.emit("peer_removed", fields{"peer": string(peer.ID()), "reason": fmt.Sprint(reason)})
}

func (r *echoReactor) Receive(e p2p.Envelope) {
	msg, ok := e.Message.(*rawMessage)
	if !ok {
		out.emit("error", fields{"error": fmt.Sprintf("unexpected message type %T", e.Message)})
		return
	}
	f := describeMessage(e.ChannelID, msg.data)
	f["peer"] = string(e.Src.ID())
	out.emit("receive", f)
	var reply []byte
	switch {
	case r.mode == "all":
		reply = msg.data
	case r.mode == "ping" && bytes.HasPrefix(msg.data, pingPrefix):
		reply = append(append([]byte(nil), pongPrefix...), msg.data[len(pingPrefix):]...)
	default:
		return
	}
	if !e.Src.Send(p2p.Envelope{ChannelID: e.ChannelID, Message: &rawMessage{data: reply}}) {
		out.emit("send_failed", fields{"peer": string(e.Src.ID()), "channel": int(e.ChannelID)})
	}
}

type switchEcho struct {
	common
	listen     string
	dials      multiFlag
	persistent bool
	chainID    string
	moniker    string
	channel    int
	echoMode   string
	appVersion uint64
}

// pickListenAddr resolves a ":0" port by binding and releasing it, because the
// NodeInfo must carry the real listen address before the transport listens.
func pickListenAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return addr, nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func runSwitchEcho(args []string) error {
	h := &switchEcho{}
	fs := flag.NewFlagSet("switch-echo", flag.ContinueOnError)
	h.register(fs)
	fs.StringVar(&h.listen, "listen", "127.0.0.1:0", "listen host:port")
	fs.Var(&h.dials, "dial", "dial ID@host:port after start (repeatable)")
	fs.BoolVar(&h.persistent, "persistent", false, "treat --dial addresses as persistent peers (redialled)")
	fs.StringVar(&h.chainID, "chain-id", "goharness-chain", "NodeInfo network (chain ID)")
	fs.StringVar(&h.moniker, "moniker", "goharness", "NodeInfo moniker")
	fs.IntVar(&h.channel, "channel", 0x42, "echo reactor channel ID")
	fs.StringVar(&h.echoMode, "echo-mode", "all", "all: echo every message; ping: answer \"ping:X\" with \"pong:X\"; none: only report")
	fs.Uint64Var(&h.appVersion, "app-version", 0, "NodeInfo protocol_version.app")
	// switch-echo defaults to info so that peer rejections show up as "log" events.
	h.logLevel = "info"
	fs.Lookup("log-level").DefValue = "info"
	if err := fs.Parse(args); err != nil {
		return err
	}
	if h.echoMode != "all" && h.echoMode != "ping" && h.echoMode != "none" {
		return fmt.Errorf("--echo-mode: expected all, ping or none, got %q", h.echoMode)
	}
	for _, addr := range append([]string{h.listen}, h.dials...) {
		if err := requireLoopback(addr); err != nil {
			return err
		}
	}
	key, err := h.privKey()
	if err != nil {
		return err
	}
	logger, err := h.newLogger()
	if err != nil {
		return err
	}
	nodeKey := p2p.NodeKey{PrivKey: key}

	var transport *p2p.MultiplexTransport
	var listenAddr string
	var ni p2p.DefaultNodeInfo
	// The released port could be taken in between; retry a few times.
	for attempt := 0; ; attempt++ {
		if listenAddr, err = pickListenAddr(h.listen); err != nil {
			return err
		}
		ni = p2p.DefaultNodeInfo{
			ProtocolVersion: p2p.NewProtocolVersion(version.P2PProtocol, version.BlockProtocol, h.appVersion),
			DefaultNodeID:   nodeKey.ID(),
			ListenAddr:      listenAddr,
			Network:         h.chainID,
			Version:         version.TMCoreSemVer,
			Channels:        []byte{byte(h.channel)},
			Moniker:         h.moniker,
			Other:           p2p.DefaultNodeInfoOther{TxIndex: "off", RPCAddress: ""},
		}
		na, err := p2p.NewNetAddressString(p2p.IDAddressString(nodeKey.ID(), listenAddr))
		if err != nil {
			return err
		}
		transport = p2p.NewMultiplexTransport(ni, nodeKey, h.mconnConfig())
		if err = transport.Listen(*na); err == nil {
			break
		}
		if attempt >= 5 {
			return fmt.Errorf("listen %s: %w", listenAddr, err)
		}
	}

	cfg := config.DefaultP2PConfig()
	cfg.ListenAddress = "tcp://" + listenAddr
	cfg.AllowDuplicateIP = true
	cfg.AddrBookStrict = false
	cfg.PexReactor = false
	cfg.FlushThrottleTimeout = time.Duration(h.flushThrottleMs) * time.Millisecond
	cfg.SendRate = h.sendRate
	cfg.RecvRate = h.recvRate
	cfg.MaxPacketMsgPayloadSize = h.maxPacketBytes

	sw := p2p.NewSwitch(cfg, transport)
	sw.SetLogger(logger.With("module", "p2p"))
	sw.AddReactor("ECHO", newEchoReactor(byte(h.channel), h.echoMode))
	sw.SetNodeKey(&nodeKey)
	sw.SetNodeInfo(ni)
	ctx, cmds, reason := h.lifetime()
	if err := sw.Start(); err != nil {
		return err
	}
	out.emit("listening", fields{
		"listen":  listenAddr,
		"node_id": string(nodeKey.ID()),
		"channel": h.channel,
		"network": h.chainID,
	})
	if h.persistent && len(h.dials) > 0 {
		if err := sw.AddPersistentPeers(h.dials); err != nil {
			return err
		}
	}
	for _, addr := range h.dials {
		go dialPeer(sw, addr)
	}

	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case cmd := <-cmds:
			handleSwitchCommand(sw, cmd)
		}
	}
	if err := sw.Stop(); err != nil {
		out.emit("error", fields{"error": "stopping switch: " + err.Error()})
	}
	out.emit("exit", fields{"reason": reason()})
	return nil
}

func dialPeer(sw *p2p.Switch, addr string) {
	err := requireLoopback(addr)
	var na *p2p.NetAddress
	if err == nil {
		na, err = p2p.NewNetAddressString(addr)
	}
	if err == nil {
		err = sw.DialPeerWithAddress(na)
	}
	if err != nil {
		out.emit("dial_failed", fields{"addr": addr, "error": err.Error()})
		return
	}
	out.emit("dialed", fields{"addr": addr})
}

// handleSwitchCommand runs send (to "peer", default every peer), dial or stop_peer.
func handleSwitchCommand(sw *p2p.Switch, cmd command) {
	switch cmd.Cmd {
	case "send":
		data, err := commandData(cmd)
		if err != nil {
			out.emit("error", fields{"error": "send: " + err.Error()})
			return
		}
		for _, peer := range sw.Peers().List() {
			if cmd.Peer != "" && string(peer.ID()) != cmd.Peer {
				continue
			}
			for i := 0; i < max(cmd.Count, 1); i++ {
				ok := peer.Send(p2p.Envelope{ChannelID: byte(cmd.Channel), Message: &rawMessage{data: data}})
				out.emit("sent", fields{"peer": string(peer.ID()), "channel": cmd.Channel, "size": len(data), "ok": ok})
			}
		}
	case "dial":
		go dialPeer(sw, cmd.Addr)
	case "stop_peer":
		peer := sw.Peers().Get(p2p.ID(cmd.Peer))
		if peer == nil {
			out.emit("error", fields{"error": "stop_peer: unknown peer " + strconv.Quote(cmd.Peer)})
			return
		}
		sw.StopPeerForError(peer, errors.New("stop_peer command"))
	default:
		out.emit("error", fields{"error": "unknown command " + cmd.Cmd})
	}
}
